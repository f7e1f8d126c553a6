"""`python -m bench.sim --config-json JSON --port P`: the child process of `start_sim_subprocess`.

Prints exactly one line, ``SIM_URL http://127.0.0.1:PORT``, once it listens, then serves until
terminated. Humans use `maas-bench sim` instead.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys

from bench.sim.model import SimConfig
from bench.sim.runners import serve_forever


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sim")
    parser.add_argument("--config-json", default="{}", help="SimConfig as JSON")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    args = parser.parse_args(argv)
    cfg = SimConfig.model_validate_json(args.config_json)
    # SIGTERM from the parent becomes KeyboardInterrupt, so the runner shuts down cleanly.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    def ready(url: str) -> None:
        sys.stdout.write(f"SIM_URL {url}\n")
        sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        serve_forever(cfg, port=args.port, on_ready=ready)


if __name__ == "__main__":
    main()
