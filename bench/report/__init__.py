"""The cost report. `build_report` (bench.report.build) wires data -> tables/figures -> render."""

from bench.report.build import ReportResult, build_report

__all__ = ["ReportResult", "build_report"]
