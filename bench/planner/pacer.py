"""The scheduler simulation in real time: `maas-bench sim --virtual GPU:MODEL:QUANT` serves the OpenAI API with
every token sent when the simulated engine step that emits it ends, so the real client (its HTTP stack, its
timestamps, its load generator) measures a GPU that is not at hand.

Why in the planner layer: it drives the same engines (bench.planner.scheduler) that `plan` and the `virtual`
engine simulate; the simulated server (bench/sim, a lower layer) only knows the `Pacer` protocol it is handed.

How: each engine (replica, or DP attention group) runs its steps back to back in simulated time t, which is the
event loop's time since the first request; after each step it sleeps until the step's end and then hands each
request the tokens the step emitted. Steps are never merged into macro steps (arrivals are not known ahead), and
a step starts at the previous step's simulated end, not at the moment the loop woke, so the loop's own lateness
does not add up over a stream (it delays only when a token is written).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from bench.errors import UserInputError
from bench.planner import simulate as sim
from bench.planner.deployment import Deployment
from bench.planner.factors import efficiency_for, get_gpu, load_roofline_config, resolve_quant
from bench.planner.scheduler import EngineSim, SimRequest
from bench.planner.virtual import catalog_hp

SPEC_HELP = "GPU[xCOUNT]:MODEL:QUANT, e.g. h200x8:glm-5.2:fp8 (COUNT GPUs in one tensor-parallel replica)"
FAILED = -1  # queued in place of a token count when the simulated engine failed
log = logging.getLogger(__name__)


@dataclass
class _Stream:
    req: SimRequest
    queue: asyncio.Queue[tuple[float, int]] = field(default_factory=asyncio.Queue)
    sent: int = 0


def parse_virtual(spec: str, *, max_num_seqs: int | None = None, max_model_len: int = 16384,
                  max_num_batched_tokens: int | None = None, ep: bool = False) -> sim.SimSetup:
    """`h200x8:glm-5.2:fp8` -> one replica of COUNT GPUs in tensor parallel, configured as vLLM would be (its
    defaults where a limit is not given; everything vLLM would refuse is one line, exit 2)."""
    parts = spec.split(":")
    if len(parts) != 3 or not all(parts):
        raise UserInputError(f"--virtual: expected {SPEC_HELP} (got {spec!r})")
    gpu_part, model, quant = parts
    head, x, tail = gpu_part.rpartition("x")  # h200x8 -> h200, 8; mi300x -> mi300x (its id ends in x); mi300xx8
    gpu_id, count = (head, int(tail)) if x and tail.isdigit() else (gpu_part, 1)
    if count < 1:
        raise UserInputError(f"--virtual: GPU count must be a positive integer, e.g. h200x8 (got {gpu_part!r})")
    cfg = load_roofline_config()
    gpu = get_gpu(gpu_id)
    try:
        hp = catalog_hp(model)
    except UserInputError as e:  # its text names the sweep field; here the flag is the input
        raise UserInputError(str(e).replace("server.model", "--virtual", 1)) from None
    q = resolve_quant(quant, None, cfg)
    eff, _ = efficiency_for(gpu.id, q.name, cfg, hbm_gb_s=gpu.hbm_gb_s)
    dep = Deployment(hp=hp, gpu=gpu, quant=q, tp=count, ep=ep, eff=eff)
    seqs = max_num_seqs or sim.vllm_default_max_num_seqs(gpu, count)
    return sim.setup(dep, 1, max_num_seqs=seqs, max_model_len=max_model_len,
                     max_num_batched_tokens=max_num_batched_tokens, where="--virtual")


class RealTimeEngines:
    """A `bench.sim.model.Pacer` over the engines of a setup, behind the setup's router (the cluster's own, whose
    event loop is not used: the steps here run on the server's clock). The API server's latency (`frontend_ms`)
    is not added: the HTTP path in front of it is real."""

    def __init__(self, setup: sim.SimSetup) -> None:
        self.setup = setup
        self.cluster = sim.cluster(setup)
        self.engines: list[EngineSim] = self.cluster.engines
        self.L = setup.engine.acceptance_length
        self.streams: dict[int, _Stream] = {}
        self.t0: float | None = None
        self.wake: dict[int, asyncio.Event] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.aborted: dict[int, list[SimRequest]] = {}  # per engine, applied between its steps

    def refuse(self, prompt_tokens: int, output_tokens: int) -> str | None:
        limit = self.setup.max_model_len
        if prompt_tokens + output_tokens > limit:
            return (f"This model's maximum context length is {limit} tokens. However, you requested "
                    f"{prompt_tokens + output_tokens} tokens ({prompt_tokens} in the messages, {output_tokens} "
                    "in the completion).")
        return None

    def _now(self) -> float:
        assert self.t0 is not None
        return asyncio.get_running_loop().time() - self.t0

    async def token_times(self, prompt_tokens: int, output_tokens: int) -> AsyncIterator[tuple[float, int]]:
        loop = asyncio.get_running_loop()
        if self.t0 is None:
            self.t0 = loop.time()
            self.wake = {e.index: asyncio.Event() for e in self.engines}
            self.tasks = [loop.create_task(self._drive(e)) for e in self.engines]
        req = SimRequest(max(prompt_tokens, 1), max(output_tokens, 1))
        st = _Stream(req)
        self.streams[id(req)] = st
        e = self.cluster.route()
        e.submit(req, self._now())
        self.wake[e.index].set()
        got = 0
        try:
            while got < req.output_len:  # counted as read, not as queued: the last step may queue ahead of us
                t, n = await st.queue.get()
                if n == FAILED:
                    raise RuntimeError("the simulated engine failed (see the server's log)")
                got += n
                yield t, n
        finally:
            self.streams.pop(id(req), None)
            if got < req.output_len:  # the client left: vLLM aborts the request, so does the engine here
                self.aborted.setdefault(e.index, []).append(req)
                self.wake[e.index].set()

    async def _drive(self, e: EngineSim) -> None:
        try:
            await self._steps(e)
        except Exception:
            log.exception("virtual engine %d failed", e.index)
            for st in list(self.streams.values()):
                st.queue.put_nowait((0.0, FAILED))

    async def _steps(self, e: EngineSim) -> None:
        ev = self.wake[e.index]
        t: float | None = None  # the previous step's end while the engine runs back to back
        while True:
            if t is None:
                await ev.wait()
                ev.clear()
                t = self._now()
            for req in self.aborted.pop(e.index, []):
                e.abort(req)
            end = e.start_step(t, horizon_s=t)  # horizon now: no macro steps
            if end is None:
                t = None
                continue
            delay = self.t0 + end - asyncio.get_running_loop().time()  # type: ignore[operator]
            if delay > 0:
                await asyncio.sleep(delay)
            done = e.end_step(end)
            self._emit(e, end, done)
            t = end

    def _emit(self, e: EngineSim, end_s: float, done: list[SimRequest]) -> None:
        """Hand each request the tokens this step emitted: a run of steps (a, b) emits one token when its prefill
        completes at a and L per decode step after it (bench.planner.scheduler's token_steps); a request still
        decoding has its last run open up to this step."""
        k = e.step - 1
        wall = end_s + (self.t0 or 0.0)
        finished = {id(r) for r in done}
        live = [(lv.req, lv.dec_step >= 0) for lv in e.running.values()] + [(r, False) for r in done]
        for req, decoding in live:
            st = self.streams.get(id(req))
            if st is None or not req.token_steps:
                continue
            total = 0
            for i, (a, b) in enumerate(req.token_steps):  # rounded down per run, as the engine counts them
                last = k if decoding and i == len(req.token_steps) - 1 else b
                total += 1 + int(self.L * (last - a) + 1e-9)
            n = (req.output_len if id(req) in finished else min(total, req.output_len)) - st.sent
            if n > 0:
                st.sent += n
                st.queue.put_nowait((wall, n))

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
