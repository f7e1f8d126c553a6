"""Issue 25 item 7: `maas-bench sim --port 70000` was an OverflowError traceback from the socket layer; the
option's range is checked by click, one line, exit 2, before anything listens."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bench.cli.app import app


@pytest.mark.parametrize("port", ["70000", "-1", "65536"])
def test_out_of_range_port_is_one_line(port):
    r = CliRunner().invoke(app, ["sim", "--port", port])
    assert r.exit_code == 2, (r.output, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: Invalid value for '--port'"), r.stderr
    assert "Traceback" not in r.output


@pytest.mark.parametrize("spec, names", [("h200:glm-5.2", "GPU[xCOUNT]:MODEL:QUANT"),
                                         ("h200x8:glm-9:fp8", "glm-9"), ("nope:glm-5.2:fp8", "nope"),
                                         ("h100:glm-5.2:bf16", "does not fit")])
def test_a_bad_virtual_gpu_is_one_line_before_anything_listens(spec, names):
    """`sim --virtual` refuses what vLLM would (an unknown model, GPU or a model that does not fit) before the
    socket opens: one line naming the problem, exit 2."""
    r = CliRunner().invoke(app, ["sim", "--port", "0", "--virtual", spec])
    assert r.exit_code == 2, (r.output, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and names in lines[0], r.stderr
    assert "listening" not in r.output
