"""Engines behind a router, in simulated time: the event loop of the scheduler simulation.

Why a module of its own: bench.planner.scheduler models ONE engine's scheduler; a deployment is several
(replicas, or data-parallel attention groups) behind a router, and the client's arrivals, think times and
step ends interleave in one event queue. Events at the same instant run in the order they were queued; an
idle engine starts its next step only after every arrival of that instant is in (a burst is one batch).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from bench.planner.scheduler import EngineSim, SimRequest

OnDone = Callable[[SimRequest, float], None]


class Cluster:
    """Engines (replicas, or DP attention groups) behind a router, driven by one event queue.

    `router`: "round_robin" or "least_loaded" (fewest requests not yet finished). Arrivals and step
    ends are events; a finished request calls `on_done(request, time_s)`, which may send more requests
    (closed loop, next turn) through `send`.
    """

    def __init__(self, engines: list[EngineSim], router: str = "least_loaded") -> None:
        if router not in ("round_robin", "least_loaded"):
            raise ValueError(f"router: one of round_robin, least_loaded (got {router!r})")
        self.engines, self.router = engines, router
        self.events: list[tuple[float, int, int, Any]] = []  # (time, order, kind, payload)
        self._n = 0
        self._rr = 0
        self.now_s = 0.0
        self.on_done: OnDone = lambda r, t: None
        # the API server's latency: a request sent at t reaches a scheduler at t + frontend_s
        self.frontend_s = engines[0].cfg.frontend_s if engines else 0.0

    def send(self, req: SimRequest, at_s: float) -> None:
        self._push(at_s + self.frontend_s, 1, req)

    def call_at(self, at_s: float, fn: Callable[[float], None]) -> None:
        """Run fn(time) at a simulated time (the client's arrivals, think times)."""
        self._push(at_s, 3, fn)

    def _push(self, t: float, kind: int, payload: Any) -> None:
        self._n += 1
        heapq.heappush(self.events, (t, self._n, kind, payload))

    def route(self, pool: list[EngineSim] | None = None) -> EngineSim:
        pool = self.engines if pool is None else pool
        if self.router == "round_robin" or len(pool) == 1:
            e = pool[self._rr % len(pool)]
            self._rr += 1
            return e
        return min(pool, key=lambda e: (e.outstanding, e.index))

    def _admit(self, req: SimRequest) -> tuple[EngineSim, SimRequest]:
        """An arrival: the engine it goes to and what that engine is given (here: the request itself)."""
        return self.route(), req

    def _done(self, e: EngineSim, req: SimRequest, t: float) -> None:
        """A request finished on engine e (here: it is the client's, done)."""
        self.on_done(req, t)

    def run(self, stop: Callable[[], bool], max_steps: int = 50_000_000) -> str | None:
        """Process events until `stop()` or nothing is left; returns a reason when it stopped early."""
        steps = 0
        while self.events and not stop():
            t, _, kind, payload = heapq.heappop(self.events)
            self.now_s = t
            if kind == 3:
                payload(t)
                continue
            if kind == 1:  # arrival: an idle engine starts once every arrival of this instant is in
                e, req = self._admit(payload)
                e.submit(req, t)
                if not e.busy and not e.kicked:
                    e.kicked = True
                    self._push(t, 2, e)
                continue
            if kind == 2:
                payload.kicked = False
                if not payload.busy:
                    self._start(payload, t)
                continue
            e = payload
            for req in e.end_step(t):
                self._done(e, req, t)
            self._start(e, t)
            steps += 1
            if steps >= max_steps:
                return f"stopped after {max_steps} engine steps"
        return None

    def _start(self, e: EngineSim, t: float) -> None:
        end = e.start_step(t, self.events[0][0] if self.events else math.inf)
        if end is not None:
            self._push(end, 0, e)

    def waiting(self) -> int:
        return sum(len(e.waiting) + len(e.inbox) for e in self.engines)


class PoolCluster(Cluster):
    """Disaggregated prefill / decode (xPyD): a prefill pool and a decode pool in one event queue.

    A client request is prefilled on a prefill engine as a copy with max_tokens 1 (what vLLM's P/D proxy
    sends), then waits in one FIFO for a decode engine with room for its prompt's KV blocks (vLLM's decode
    side allocates them before it pulls the KV), its KV moves over the link of the prefill engine it came from
    (`transfer_s(request)` seconds of bandwidth, one transfer at a time per prefill engine, plus `latency_s`)
    and lands in that decode engine's block pool as cached blocks under the request's own hashes. The request
    then arrives there: admitted as a prefix hit, it computes the rest of its last block (vLLM: the last prompt
    token), emits the first token the client sees (the proxy streams from the decode server only) and decodes.
    Decode engines need prefix caching on (the landing uses the prefix cache); `engines` lists the prefill
    pool then the decode pool, each engine's index its position.
    """

    def __init__(self, prefill: list[EngineSim], decode: list[EngineSim], transfer_s: Callable[[SimRequest], float],
                 latency_s: float = 0.0, router: str = "least_loaded") -> None:
        super().__init__([*prefill, *decode], router)
        if [e.index for e in self.engines] != list(range(len(self.engines))):
            raise ValueError("PoolCluster: engine indices must be 0..n-1, the prefill pool first")
        if not all(e.cfg.prefix_caching for e in decode):
            raise ValueError("PoolCluster: decode engines need prefix_caching (transferred KV lands as cached blocks)")
        self.prefill, self.decode = prefill, decode
        self.transfer_s, self.latency_s = transfer_s, latency_s
        self._client: dict[int, SimRequest] = {}  # id(prefill copy) -> the client's request
        self._bound: dict[int, EngineSim] = {}  # id(client request) -> the decode engine its KV landed on
        self._reserved = {e.index: 0 for e in decode}  # blocks of transfers in flight to each decode engine
        self._link_free_s = {e.index: 0.0 for e in prefill}
        self.kv_queue: deque[tuple[SimRequest, EngineSim]] = deque()
        self.kv_waits = 0  # requests that found no decode engine with room for their KV when prefilled
        self.transfers = 0
        self.transfer_busy_s = 0.0
        self._serial = 0

    def _admit(self, req: SimRequest) -> tuple[EngineSim, SimRequest]:
        d = self._bound.pop(id(req), None)
        if d is not None:
            return d, req
        pre = SimRequest(req.prompt_len, 1, hashes=req.hashes)
        self._client[id(pre)] = req
        return self.route(self.prefill), pre

    def _done(self, e: EngineSim, req: SimRequest, t: float) -> None:
        client = self._client.pop(id(req), None)
        if client is None:  # a decode finished: the client's request is done, and blocks are free
            for h in req.hashes:  # its landed blocks (hashes no other request has) are freed, not cached
                if e.cache.get(h) == 0:
                    del e.cache[h]
                    e.evictable.pop(h, None)
            self.on_done(req, t)
            self._pump(t)
            return
        self.kv_queue.append((client, e))
        self._pump(t)
        if self.kv_queue and self.kv_queue[-1][0] is client:
            self.kv_waits += 1

    @staticmethod
    def _blocks(req: SimRequest, d: EngineSim) -> int:
        return -(-req.prompt_len // d.cfg.block_size)

    def _room(self, d: EngineSim) -> float:
        """Free blocks of a decode engine: its pool less what runs, what landed and waits, what is in flight."""
        return d.cfg.num_blocks - d._in_use(d.step) - len(d.evictable) - self._reserved[d.index]

    def _pump(self, t: float) -> None:
        """Start the transfers of the queue's head while some decode engine has room for them (FIFO)."""
        while self.kv_queue:
            client, src = self.kv_queue[0]
            room = [d for d in self.decode if self._room(d) >= self._blocks(client, d)]
            if not room:
                return
            self.kv_queue.popleft()
            d = self.route(room)
            need = self._blocks(client, d)
            self._reserved[d.index] += need
            start = max(t, self._link_free_s[src.index])
            busy = self.transfer_s(client)
            self._link_free_s[src.index] = start + busy
            self.transfers += 1
            self.transfer_busy_s += busy
            self.call_at(start + busy + self.latency_s,
                         lambda at, c=client, d=d, n=need: self._land(c, d, n, at))

    def _land(self, client: SimRequest, d: EngineSim, need: int, t: float) -> None:
        """The KV is in d's pool: its full blocks become cached blocks of hashes only this request has."""
        self._serial += 1
        hashes = tuple(hash(("kv-transfer", self._serial, i)) for i in range(client.prompt_len // d.cfg.block_size))
        for h in hashes:
            d.cache[h] = 0
            d.evictable[h] = None
        client.hashes, client.out_hashes = hashes, None
        self._reserved[d.index] -= need
        self._bound[id(client)] = d
        self._push(t, 1, client)

    def waiting(self) -> int:
        return super().waiting() + len(self.kv_queue)
