"""Issue 25: a gateway that echoes the API key back in a 401 body, raw, JSON-escaped, URL-encoded (quote and
quote_plus) and base64 (alone and inside a Basic credential, at each byte alignment), must not get any form of
it into a file under the run directory or into what `maas-bench run` prints."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from urllib.parse import quote, quote_plus

import pytest
import yaml
from aiohttp import web
from fake_endpoint import serve

KEY = "sk-Te5t/K3y+Pl4in=wOrd&é \"quoted\""


def forms(key: str) -> dict[str, str]:
    raw = key.encode()
    out = {"raw": key, "json": json.dumps(key)[1:-1], "json-utf8": json.dumps(key, ensure_ascii=False)[1:-1],
           "quote": quote(key), "quote-safe": quote(key, safe=""), "quote_plus": quote_plus(key),
           "base64": base64.b64encode(raw).decode(), "base64url": base64.urlsafe_b64encode(raw).decode()}
    for prefix in ("u:", "us:", "use:"):  # the key at byte offsets 2, 0 and 1 of a Basic credential
        out[f"basic {prefix}"] = base64.b64encode(prefix.encode() + raw).decode()
    return out


@pytest.fixture(scope="module")
def echo_url():
    """401 whose JSON body echoes the bearer token in every form (taken from the request itself)."""

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/v1/models":  # the model check passes, so the requests themselves get the 401
            return web.json_response({"object": "list", "data": [{"id": "glm-4.5-tiny"}]})
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        body = {"error": {"message": "invalid api key", "echo": forms(token)}}
        return web.Response(status=401, text=json.dumps(body), content_type="application/json")

    with serve(handle) as url:
        yield url


def _leaks(text: str) -> list[str]:
    found = [name for name, f in forms(KEY).items() if f in text]
    # the key's distinctive middle, raw or in any of the simple encodings, is also caught
    for name, f in forms("Te5t/K3y+Pl4in").items():
        if name in ("raw", "json", "quote", "quote-safe", "quote_plus") and f in text:
            found.append(f"part {name}")
    return found


@pytest.mark.parametrize("json_out", [False, True])
def test_no_form_of_the_key_reaches_a_file_or_the_output(tmp_path, echo_url, json_out):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "secret", "engine": {"kind": "openai", "base_url": echo_url, "api_key_env": "MAAS_TEST_KEY"},
        "hardware": {"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1}, "server": {"model": "glm-4.5-tiny"},
        "load": {"concurrency": [1], "num_requests": 2, "warmup_requests": 0},
        "workloads": [{"name": "w", "input_len": 8, "output_len": 4}],
    }))
    out = tmp_path / "out"
    env = {**os.environ, "MAAS_TEST_KEY": KEY, "COLUMNS": "400"}
    res = subprocess.run([sys.executable, "-m", "bench", "run", str(cfg), "--out", str(out),
                          *(["--json"] if json_out else [])], capture_output=True, env=env, timeout=120)
    printed = res.stdout.decode("utf-8", "replace") + res.stderr.decode("utf-8", "replace")
    assert res.returncode == 1, printed[-2000:]  # the point failed: every request got a 401
    assert "HTTP 401" in printed and "***" in printed, printed[-2000:]  # the error is shown, masked
    assert _leaks(printed) == []
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.parent.name == "rows" for p in files)
    for p in files:
        data = p.read_bytes()
        text = data.decode("utf-8", "replace") + data.decode("latin-1")
        assert _leaks(text) == [], p
    # and the fake really echoed the key: an unmasked client would have leaked it (a check of the check)
    row = json.loads(next(out.glob("*/rows/*.json")).read_text())
    assert row["error"].count("***") >= 3, row["error"]


def test_credentials_in_base_url_are_refused_without_echoing_them(tmp_path):
    for url in ("http://user:Pa55word@127.0.0.1:9/v1", "https://127.0.0.1:9/v1?api_key=Pa55word"):
        cfg = tmp_path / "sweep.yaml"
        cfg.write_text(yaml.safe_dump({
            "name": "creds", "engine": {"kind": "openai", "base_url": url},
            "hardware": {"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1}, "server": {"model": "glm-4.5-tiny"},
            "load": {"concurrency": [1], "num_requests": 1, "warmup_requests": 0},
            "workloads": [{"name": "w", "input_len": 8, "output_len": 4}],
        }))
        out = tmp_path / "out"
        res = subprocess.run([sys.executable, "-m", "bench", "run", str(cfg), "--out", str(out)],
                             capture_output=True, timeout=60)
        lines = [ln for ln in res.stderr.decode().splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1, res.stderr.decode()
        assert "engine.base_url" in lines[0] and "api_key_env" in lines[0]
        assert "Pa55word" not in res.stdout.decode() + res.stderr.decode()
        assert not out.exists() or not list(out.rglob("*"))
