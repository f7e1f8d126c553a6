"""The comparison page in a real browser: headless Chromium loads compare.html from file://, a filter is
changed the way a user changes it (the select's value, then its change event), and the frontier and the
cheapest-configuration table must change to the rows worked out by hand from the catalog fixture
(tests/unit/report/test_results_catalog.py, HAND). The page's frontier (a JS port of bench.report.pareto) is also
checked against pareto_front itself on random points.

Chromium and the DevTools client are the report browser test's (test_report_browser.py: Debian's chromium,
installed with apt-get when missing and run as root, else the test is skipped with the reason).
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from bench.report.catalog_query import CatalogPricing
from bench.report.compare import build_compare
from bench.report.pareto import pareto_front
from tests.integration.report.test_report_browser import Chromium, Page, chromium  # noqa: F401 (fixture)
from tests.unit.report.test_results_catalog import HAND, make_catalog

STATE_JS = """JSON.stringify({
  frontier: Array.from(document.querySelectorAll('#frontier tbody tr')).map(r => r.dataset.point),
  plotted: Array.from(document.querySelectorAll('#frontier-points a')).map(a => a.dataset.point),
  cheapest: Object.fromEntries(Array.from(document.querySelectorAll('#cheapest tbody tr'))
                               .map(r => [r.dataset.slo, r.dataset.point])),
  count: document.getElementById('count').textContent,
  links: Array.from(document.querySelectorAll('#frontier tbody tr td a')).map(a => a.getAttribute('href')),
  timings: window.compareTimings})"""


def set_filter_js(key: str, value: str) -> str:
    """Choose `value` in the page's `key` filter and fire its change event, as a user's click does."""
    return (f"(() => {{ const s = document.getElementById({json.dumps('f-' + key)}); s.value = {json.dumps(value)};"
            " if (s.value !== " + json.dumps(value) + ") throw new Error('no such option');"
            " s.dispatchEvent(new Event('change')); return true; })()")


async def drive(port: int, url: str, steps: list[str]) -> tuple[list[dict[str, Any]], list[str], Any]:
    """Load `url`, wait for its first paint, then after each JS step (and the paint after it) read the state."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json(content_type=None)
        page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        async with http.ws_connect(page_ws, max_msg_size=0) as ws:
            page = Page(ws)
            for domain in ("Page", "Runtime", "Log"):
                await page.send(f"{domain}.enable")
            await page.load(url)
            await _wait(page, "window.compareTimings && window.compareTimings.ready === true")
            states = [json.loads(await page.evaluate(STATE_JS))]
            for i, step in enumerate(steps):
                await page.evaluate(step)
                await _wait(page, f"window.compareTimings.renders.length >= {i + 1}")
                states.append(json.loads(await page.evaluate(STATE_JS)))
            checker = await page.evaluate(PARETO_JS)
            errors = page.errors()
            page.reader.cancel()
            return states, errors, checker


async def _wait(page: Page, cond: str) -> None:
    for _ in range(600):
        if await page.evaluate(f"Boolean({cond})"):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"page never reached: {cond}")


_RNG = random.Random(20261205)
# random points with ties and a missing coordinate: the JS frontier must equal pareto_front's
PARETO_XS = [float(_RNG.randint(0, 12)) for _ in range(60)]
PARETO_YS = [float(_RNG.randint(0, 12)) for _ in range(60)]
PARETO_YS[5] = None  # type: ignore[call-overload]
PARETO_JS = (f"JSON.stringify(window.compareParetoFront(Array.from({{length: 60}}, (_, i) => i), "
             f"{json.dumps(PARETO_XS)}, {json.dumps(PARETO_YS)}))")


def _names(points: list[str]) -> set[str]:
    """'r1-h100/pt-A' -> 'A'."""
    return {p.rsplit("pt-", 1)[1] for p in points if p}


@pytest.mark.slow
def test_filters_change_the_frontier_and_cheapest_table(chromium, tmp_path):  # noqa: F811
    root = make_catalog(tmp_path / "results")
    res = build_compare([root], tmp_path / "page", pricing=CatalogPricing())
    steps = [set_filter_js("source", "measured"), set_filter_js("gpu", "h100")]
    browser = Chromium(chromium, tmp_path / "profile")
    try:
        states, errors, js_front = asyncio.run(asyncio.wait_for(drive(browser.port, res.html_path.as_uri(), steps),
                                                                120))
    finally:
        browser.stop()
    assert errors == []
    for state, key in zip(states, ("all", "source=measured", "source=measured,gpu=h100"), strict=True):
        want = HAND[key]
        assert _names(state["frontier"]) == want["frontier"], (key, state)
        assert _names(state["plotted"]) == want["frontier"], (key, state)
        assert {slo: _names([p]).pop() for slo, p in state["cheapest"].items()} == \
            {k: want[k] for k in ("interactive", "standard", "batch")}, (key, state)
    assert states[0]["count"].startswith("6 of 6 points")  # the failed point is not on the page
    assert states[2]["count"].startswith("3 of 6 points")
    # links go back to the run folders, relative to the page
    assert "../results/r1-h100/" in states[2]["links"]
    target = (res.html_path.parent / "../results/h200/r2-h200/").resolve()
    assert target.is_dir() and "../results/h200/r2-h200/" in states[1]["links"]
    # the page's frontier is pareto_front's
    nan_free = [float("nan") if y is None else y for y in PARETO_YS]
    assert json.loads(js_front) == pareto_front(PARETO_XS, nan_free)
    t = states[-1]["timings"]
    assert t["first_paint_ms"] > 0 and len(t["renders"]) == 2
