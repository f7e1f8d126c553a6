"""The HTML report in a real browser: headless Chromium (Debian's `chromium`) loads report.html from
file://, with no console errors, all six figures decoded (a-e plus the cache-margin figure; the
fixture has no speculative point, so no spec figure), and a screenshot that is not blank.

Chromium is driven over the DevTools protocol (a websocket, via aiohttp, already a dependency).
The report file is copied alone into an empty directory first, so a figure that was linked instead
of embedded would fail to load and show up as an error. A control page with a deliberate console
error and a broken image proves the error capture itself works.

Chromium is installed with apt when missing (CI runs as root); the test is skipped, with the
reason, only when that install fails. Set MAAS_BENCH_SCREENSHOT_DIR to keep the screenshots.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.report.build import build_report
from bench.sweep.store import RunStore

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--remote-debugging-port=0",
                  "--remote-debugging-address=127.0.0.1", "--window-size=1280,1600", "--hide-scrollbars"]


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = _find_chromium()
    if path:
        return path
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and installing it needs root (apt-get install -y chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, timeout=600, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, capture_output=True,
                       timeout=900, env=env)
    except (OSError, subprocess.SubprocessError) as e:
        err = getattr(e, "stderr", b"") or b""
        pytest.skip(f"could not install chromium with apt-get: {e} {err.decode(errors='replace')[-300:]}")
    path = _find_chromium()
    if not path:
        pytest.skip("apt-get install chromium succeeded but no chromium binary is on PATH")
    return path


def _fixture_run(root: Path) -> Path:
    """Three ok points and one failed point of a CPU run (numbers need not be realistic here)."""
    d = root / "browser-run"
    store = RunStore(d)
    store.init({"name": "browser", "slo": {"ttft_ms": 2000, "tpot_ms": 100}},
               {"maas_bench": "0.1.0", "device": "cpu", "cpu_model": "Fixture CPU"})
    for i, (conc, tok, tpot) in enumerate([(1, 100.0, 10.0), (4, 320.0, 12.0), (16, 900.0, 18.0), (32, 0, 0)]):
        row: dict[str, Any] = {
            "run_id": d.name, "point_id": f"pt{i}", "point_index": i, "status": "ok", "error": None,
            "model": "glm-4.5-tiny", "dtype": "bfloat16", "quantization": "none", "max_num_seqs": 32,
            "device": "cpu", "gpu_type": "cpu-2core", "gpu_count": 1, "hardware_tier": "neocloud",
            "concurrency": conc, "request_rate": None, "num_requests": 8, "completed": 8,
            "input_tokens": 1024, "output_tokens": 512, "output_tok_s_per_gpu": tok, "total_tok_s_per_gpu": 3 * tok,
            "ttft_ms_p50": 20.0 * conc, "ttft_ms_p90": 30.0 * conc, "ttft_ms_p99": 40.0 * conc,
            "tpot_ms_p50": tpot, "tpot_ms_p90": tpot * 1.1, "tpot_ms_p99": tpot * 1.3, "e2el_ms_p99": 900.0,
            "interactivity_tok_s_user": 1000.0 / tpot if tpot else None, "token_count_mismatches": 0,
            "usage_missing": 0, "slo_ttft_ms": 2000.0, "slo_tpot_ms": 100.0, "usd_per_gpu_hour": 0.08,
            "usd_per_m_output": 0.08 / (tok * 0.0036) if tok else None,
            "usd_per_m_total": 0.08 / (3 * tok * 0.0036) if tok else None,
        }
        if not tok:
            row.update({"status": "failed", "error": "engine failed to start: test", "completed": 0})
        store.write_point(row)
    return d


class Chromium:
    """A headless Chromium we started, with its DevTools port; stopped by process group id."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []

        def pump() -> None:
            assert self.proc.stderr is not None
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace")
                self.stderr.append(line)
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        self.port: int | None = None
        while self.port is None:
            try:
                line = lines.get(timeout=60)
            except queue.Empty:
                self.stop()
                raise RuntimeError("chromium did not print its DevTools address within 60 s:\n"
                                   + "".join(self.stderr[-20:])) from None
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


class Page:
    """Minimal DevTools-protocol client for one page target: commands, and the events it saw."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.next_id, self.events = ws, 0, []
        self.pending: dict[int, asyncio.Future] = {}
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            else:
                self.events.append(data)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, 60)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def load(self, url: str) -> None:
        start = len(self.events)
        await self.send("Page.navigate", url=url)
        for _ in range(600):
            if any(e.get("method") == "Page.loadEventFired" for e in self.events[start:]):
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"{url}: no load event within 30 s")
        await asyncio.sleep(0.5)  # late console messages and image decodes

    def errors(self, since: int = 0) -> list[str]:
        out = []
        for e in self.events[since:]:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif m == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:300])
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    async def evaluate(self, expr: str) -> Any:
        r = await self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return r["result"].get("value")


async def _inspect(port: int, report: Path, control: Path, shots: Path) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json(content_type=None)
        page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        async with http.ws_connect(page_ws, max_msg_size=0) as ws:
            page = Page(ws)
            for domain in ("Page", "Runtime", "Log"):
                await page.send(f"{domain}.enable")
            await page.send("Emulation.setDeviceMetricsOverride", width=1280, height=1600, deviceScaleFactor=1,
                            mobile=False)
            out: dict[str, Any] = {}
            mark = len(page.events)
            await page.load(report.as_uri())
            out["errors"] = page.errors(mark)
            out["dom"] = await page.evaluate(
                "JSON.stringify({images: document.images.length, decoded: Array.from(document.images)"
                ".filter(i => i.complete && i.naturalWidth > 300).length, title: document.title, "
                "headline: document.getElementById('headline') !== null, "
                "rows: document.querySelectorAll('#points ~ div table tbody tr').length, "
                "height: document.documentElement.scrollHeight})")
            viewport = await page.send("Page.captureScreenshot", format="png")
            metrics = await page.send("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            full = await page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                   clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
            import base64

            out["viewport_png"] = base64.b64decode(viewport["data"])
            out["full_png"] = base64.b64decode(full["data"])
            for name in ("viewport_png", "full_png"):
                (shots / f"report_{name.replace('_png', '')}.png").write_bytes(out[name])
            mark = len(page.events)
            await page.load(control.as_uri())
            out["control_errors"] = page.errors(mark)
            page.reader.cancel()
            return out


def _distinct_colours(png: bytes) -> tuple[int, float]:
    """(number of distinct RGB colours, share of pixels that are not near-white)."""
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(png), format="png")
    rgb = (img[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    distinct = len(np.unique(rgb, axis=0))
    non_white = float(np.mean(rgb.min(axis=1) < 235))
    return distinct, non_white


@pytest.mark.slow
def test_report_html_in_headless_chromium(chromium, tmp_path):
    res = build_report([_fixture_run(tmp_path)], tmp_path / "report")
    alone = tmp_path / "html-only"
    alone.mkdir()
    report = alone / "report.html"
    shutil.copy(res.html_path, report)  # no PNGs next to it: every figure must be embedded
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                       '<img src="missing.png"><script>console.error("control error")</script></body></html>')
    shots = Path(os.environ.get("MAAS_BENCH_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    browser = Chromium(chromium, tmp_path / "profile")
    try:
        out = asyncio.run(asyncio.wait_for(_inspect(browser.port, report, control, shots), 120))
    finally:
        browser.stop()
    # the capture works: the control page's deliberate error and broken image are both reported
    assert any("control error" in e for e in out["control_errors"]), out["control_errors"]
    assert any("missing.png" in e for e in out["control_errors"]), out["control_errors"]
    # the report: no console errors, all six figures decoded (a-e + cache; the fixture has no
    # speculative point), headline and one table row per point
    assert out["errors"] == [], out["errors"]
    dom = json.loads(out["dom"])
    assert dom["images"] == 6 and dom["decoded"] == 6, dom
    assert dom["headline"] and dom["title"].startswith("Cost report: browser-run")
    assert dom["rows"] == 4, dom
    # screenshots are not blank: many distinct colours and a real share of non-white pixels
    for name in ("viewport_png", "full_png"):
        distinct, non_white = _distinct_colours(out[name])
        assert distinct > 200, (name, distinct)
        assert non_white > 0.03, (name, non_white)
