"""The server's side of one online point: its /metrics before and after, its prefix cache emptied before the
load, the health watch beside it, and the wall clock of the point's phases.

Why apart from bench.sweep.session: the session decides what a point is and writes its row; this module
talks to the server around the point's load (admin routes, not the measured requests) and keeps the times
the row's wall-time columns and the run's timing.json (bench.sweep.timing) are made of.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench.engines.base import Engine
from bench.measure.client import ClientConfig
from bench.measure.health import HealthWatch

SERVER_METRIC_COLUMNS = ("kv_cache_usage_frac", "prefix_cache_queries", "prefix_cache_hits", "prefix_cache_hit_rate",
                         "num_preemptions", "spec_num_drafts", "spec_num_draft_tokens", "spec_num_accepted_tokens",
                         "spec_draft_acceptance_rate", "spec_acceptance_length", "spec_accept_rate_per_pos",
                         "server_prompt_tokens", "server_generation_tokens")


class ServerProbe:
    """Scrapes the server's /metrics before the point's load starts and when its measured phase ends.

    Never during the measured phase: rendering /metrics blocks vLLM's API-server event loop (100+ ms
    on a busy CPU box), which would hold back the stream chunks being measured. The end scrape runs
    once the last measured request is done, while the cool-down load is still on, so gauges such as
    KV-cache usage describe the loaded server, not an idle one. Counters are differenced
    (bench.measure.prometheus), so they also count the warm-up's requests and the cool-down requests the
    server admitted before the end scrape: on a prefix workload those hit prefixes the measured requests
    cached, so the counters' hit rate reads above the measured requests' own (`cached_input_frac`, from each
    request's usage): a CI run read 0.539 where the requests said 0.485, exactly (8+2)x512 / ((16+2)x528) for
    two cool-down requests. The counters are the point's own only when the cache was emptied before it
    (`reset_cache`).

    `times` holds the monotonic clock at load_start, measure_start, measure_end and load_end (`mark`).
    """

    def __init__(self, reset_cache: bool = False) -> None:
        self.base_url: str | None = None
        self.texts: dict[str, str | None] = {}
        self.reset_cache = reset_cache
        self.cache_reset: bool | None = None  # True: emptied before the load; False: tried and failed
        self.reset_error: str | None = None
        self.times: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.times[name] = time.monotonic()

    async def before_load(self) -> None:
        """Empty the prefix cache (when asked), then scrape the counters the point's deltas start from."""
        if self.base_url is None:
            return
        import aiohttp

        from bench.measure.prometheus import fetch_metrics, reset_prefix_cache

        async with aiohttp.ClientSession() as session:
            if self.reset_cache:
                self.reset_error = await reset_prefix_cache(self.base_url, session)
                self.cache_reset = self.reset_error is None
            self.texts["before"] = await fetch_metrics(self.base_url, session)

    async def scrape(self, name: str) -> None:
        if self.base_url is None:
            return
        import aiohttp

        from bench.measure.prometheus import fetch_metrics

        async with aiohttp.ClientSession() as session:
            self.texts[name] = await fetch_metrics(self.base_url, session)

    def on_phase(self, name: str) -> Any:
        """The load generator's phase hook: note the time; at measure_end, scrape (awaited by the load)."""
        self.mark(name)
        return self.scrape("after") if name == "measure_end" else None

    def columns(self) -> dict[str, Any]:
        from bench.measure.prometheus import scrape_prometheus, vllm_metric_deltas

        before, after = self.texts.get("before"), self.texts.get("after")
        cache = {"prefix_cache_reset": self.cache_reset}
        if before is None or after is None:
            return {**dict.fromkeys(SERVER_METRIC_COLUMNS), "server_metrics_available": False, **cache}
        d = vllm_metric_deltas(scrape_prometheus(before), scrape_prometheus(after))
        d["server_prompt_tokens"] = d.pop("prompt_tokens")
        d["server_generation_tokens"] = d.pop("generation_tokens")
        if d.get("spec_accept_rate_per_pos") is not None:  # a list: one JSON string column (parquet-friendly)
            d["spec_accept_rate_per_pos"] = json.dumps([round(r, 6) for r in d["spec_accept_rate_per_pos"]])
        return {**{k: d.get(k) for k in SERVER_METRIC_COLUMNS}, "server_metrics_available": True, **cache}

    def phase_columns(self) -> dict[str, float | None]:
        """Wall seconds of the load's phases: warm-up (load start to the first measured send), measured (to the
        last measured request's end), cool-down (to the load's end, its requests cancelled); None if not seen."""
        t = self.times

        def span(a: str, b: str) -> float | None:
            return t[b] - t[a] if a in t and b in t else None

        return {"warmup_wall_s": span("load_start", "measure_start"),
                "measure_wall_s": span("measure_start", "measure_end"),
                "cooldown_wall_s": span("measure_end", "load_end")}


def health_watch(engine: Engine, cfg: ClientConfig) -> HealthWatch:
    """What bench.measure.health watches during an online point: the process of an engine that starts one
    (its `alive()`) and, for every HTTP engine, the endpoint's /health. The virtual engine is not watched."""
    proc = engine.starts_server
    return HealthWatch(base_url=cfg.base_url or None, alive=engine.alive if proc else None,
                       died_reason=engine.failure_reason, ca_file=cfg.ca_file, verify_tls=cfg.verify_tls)
