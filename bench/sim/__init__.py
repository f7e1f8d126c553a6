"""Simulated OpenAI-compatible streaming server: exact TTFT/ITL/token counts for harness checks.

See `bench.sim.server` (aiohttp app), `bench.sim.runners` (thread, subprocess, foreground) and
`bench.sim.model` (token and timing rules).
"""

from bench.sim.model import SimConfig, sim_config_from_options, told_request_metrics
from bench.sim.runners import run_sim_in_thread, serve_forever, start_sim_subprocess, stop_sim_subprocess
from bench.sim.server import make_app

__all__ = [
    "SimConfig",
    "make_app",
    "run_sim_in_thread",
    "serve_forever",
    "sim_config_from_options",
    "start_sim_subprocess",
    "stop_sim_subprocess",
    "told_request_metrics",
]
