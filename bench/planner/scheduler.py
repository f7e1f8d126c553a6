"""A discrete-event model of vLLM V1's scheduler: continuous batching, chunked prefill, KV blocks,
preemption and prefix caching, stepped over the planner's fitted per-step latency model.

Why: a closed form prices TTFT as one prefill next to a decode batch, which is 4-20x too optimistic
under load; a real engine queues prompts for a slot and for the token budget, prefills long prompts in
chunks between decode steps, slows every decode with those chunks, preempts when KV blocks run out
and reuses cached prefix blocks. This module replays that step by step (as BLIS and Vidur do); the
duration of each step comes from `StepTimer` (bench.planner.deployment's step model with the engine
factors of configs/roofline.yaml or a calibration). Nothing here is fitted per case.

One step of one engine (vllm/v1/core/sched/scheduler.py `schedule()`, vLLM 0.32, read 2026-12-04):
1. RUNNING first, oldest first: every decoding sequence gets K+1 query tokens (K draft tokens with
   speculation, else 1) and every partially prefilled one its next chunk, min(remaining, budget), out
   of the `max_num_batched_tokens` budget. KV blocks are allocated for the new tokens; when the pool
   is short the NEWEST running request is preempted (recompute: its blocks are freed, it goes back to
   the front of WAITING and later prefills its prompt plus what it had generated).
2. WAITING, in arrival order, only when nothing was preempted this step: admitted while the budget
   lasts, fewer than `max_num_seqs` run and its first chunk's blocks fit. A first admission looks up
   the prompt's full blocks in the prefix cache (longest cached prefix of chained block hashes, at most
   prompt - 1 tokens) and prefills only the rest.
3. The step runs for StepTimer(decodes, their mean context, prefill tokens, the context those chunks
   attend to). At its end every decoding sequence emits L tokens (L = acceptance length, 1 without
   speculation) and a sequence whose prefill completed emits its first token.
With async scheduling (vLLM's default since 0.14 for most configs) step n+1 is scheduled while step
n runs, so a request is first seen by the step after the one running when it arrived.

Simplifications, stated once: decoding sequences are tracked in aggregate (count, context sum,
private-token sum), so their KV blocks are the expected ceil(tokens / block) over uniform offsets,
tokens/B + (B-1)/(2B) each; blocks of generated tokens are hashed into the prefix cache when the
request ends (vLLM hashes each block as it fills; only multi-turn sessions read them back, after the
turn ends); acceptance is its mean L per step, not a random draw; a decode batch never exceeds the
token budget (vLLM would leave some decodes for the next step).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.units import NS_PER_S

# --- configuration and requests --------------------------------------------------------------------


@dataclass(frozen=True)
class EngineConfig:
    """What one vLLM engine's scheduler is configured with (the sweep's server axes)."""

    max_num_seqs: int
    max_num_batched_tokens: int
    num_blocks: int  # KV blocks of this engine (per attention group with DP attention)
    block_size: int = 16
    prefix_caching: bool = False
    spec_tokens: int = 0  # K draft tokens per step
    acceptance_length: float = 1.0  # L tokens emitted per decoding sequence per step
    async_scheduling: bool = True
    frontend_s: float = 0.0  # the API server's latency per request (Efficiency.frontend_ms)


@dataclass
class SimRequest:
    """One request as the engine sees it. `hashes`: chained hashes of the prompt's full blocks (prefix
    caching; empty = never a hit); `out_hashes(n)` gives the hashes of prompt + n output tokens' full
    blocks, cached when the request ends (multi-turn reuse). `tag` is the client's."""

    prompt_len: int
    output_len: int
    hashes: tuple[int, ...] = ()
    out_hashes: Callable[[int], tuple[int, ...]] | None = None
    tag: Any = None
    # filled by the engine
    arrival_s: float = 0.0
    first_token_s: float | None = None
    token_steps: list[tuple[int, int]] = field(default_factory=list)  # [first, last] step index runs
    engine: int = 0
    cached_tokens: int = 0
    preemptions: int = 0


class _Live:
    """Scheduler state of one admitted or waiting request."""

    __slots__ = ("req", "total", "computed", "generated", "refs", "hit_tokens", "dec_step", "dec_epoch",
                 "ctx0", "priv0", "seq", "priv_blocks")

    def __init__(self, req: SimRequest, seq: int) -> None:
        self.req, self.seq = req, seq
        self.total = req.prompt_len  # tokens to prefill (prompt, plus generated ones after a preemption)
        self.computed = 0
        self.generated = 0
        self.refs: list[int] = []  # prefix-cache block hashes this request holds
        self.hit_tokens = 0
        self.dec_step = -1  # step index at which it joined the decode group (-1: not decoding)
        self.dec_epoch = 0
        self.ctx0 = 0.0
        self.priv0 = 0.0
        self.priv_blocks = 0  # blocks held outside the prefix cache while not decoding


# --- one engine ---------------------------------------------------------------------------------------


class EngineSim:
    """The scheduler and KV block pool of one engine; `Cluster` drives its steps in time."""

    def __init__(self, cfg: EngineConfig, timer: Callable[[int, float, list[tuple[float, float]]], float],
                 index: int = 0, jitter: Any = None) -> None:
        """`jitter`: multipliers of the step times (bench.planner.simulate.StepJitter), None = every step as timed."""
        self.cfg, self.timer, self.index, self.jitter = cfg, timer, index, jitter
        self.inbox: deque[_Live] = deque()  # arrived, not yet visible to the scheduler (async scheduling)
        self.waiting: deque[_Live] = deque()
        self.running: OrderedDict[int, _Live] = OrderedDict()  # admission order; last = newest
        self.step = 0
        self.step_end_s: list[float] = []
        self.busy = False
        self.kicked = False  # a start is queued for an idle engine
        self.last_start_s = 0.0
        self.last_end_s = -1.0
        # decode group aggregates: context sum = ctx_a + n_dec * step * L (likewise private tokens)
        self.n_dec = 0
        self.ctx_a = 0.0
        self.priv_a = 0.0
        self.finish_heap: list[tuple[int, int, int, _Live]] = []
        self.private_blocks = 0  # blocks of prefilling requests not in the prefix cache
        self.cache: dict[int, int] = {}  # block hash -> refcount of the cached blocks (0 = evictable)
        self.evictable: OrderedDict[int, None] = OrderedDict()  # the refcount-0 ones, least recently used first
        self.cache_in_use = 0
        self._seq = 0
        self._chunks: list[tuple[_Live, int]] = []
        self._ends: Any = None
        self.outstanding = 0
        self.tokens_out = 0.0
        self.preemptions = 0
        self.prefix_hit_tokens = 0
        self.prompt_tokens = 0

    def step_end_ns(self) -> Any:
        """End times of every step so far, integer ns, as a numpy array (records slice it by step index)."""
        import numpy as np

        if getattr(self, "_arr_n", -1) != len(self.step_end_s):
            self._arr = (np.asarray(self.step_end_s) * NS_PER_S).astype(np.int64)
            self._arr_n = len(self.step_end_s)
        return self._arr

    # blocks ------------------------------------------------------------------------------------
    def _dec_blocks(self, step: int, extra_tokens: float = 0.0) -> float:
        if not self.n_dec:
            return 0.0
        b = self.cfg.block_size
        priv = self.priv_a + self.n_dec * step * self.cfg.acceptance_length + extra_tokens
        return (priv + self.n_dec * (b - 1) / 2.0) / b

    def _in_use(self, step: int, extra_dec_tokens: float = 0.0) -> float:
        return self.cache_in_use + self.private_blocks + self._dec_blocks(step, extra_dec_tokens)

    def _fits(self, blocks: float, step: int, extra_dec_tokens: float = 0.0) -> bool:
        return self._in_use(step, extra_dec_tokens) + blocks <= self.cfg.num_blocks

    def _evict_to(self, step: int) -> None:
        """Drop least recently used evictable cached blocks until used + cached fit the pool."""
        over = self._in_use(step) + len(self.evictable) - self.cfg.num_blocks
        while over > 0 and self.evictable:
            h, _ = self.evictable.popitem(last=False)
            del self.cache[h]
            over -= 1

    def _ref(self, h: int) -> None:
        rc = self.cache.get(h)
        if rc is None:
            self.cache[h] = 1
            self.cache_in_use += 1
            return
        if rc == 0:
            self.cache_in_use += 1
            del self.evictable[h]
        self.cache[h] = rc + 1

    def _unref(self, hs: list[int]) -> None:
        for h in hs:
            rc = self.cache.get(h)
            if rc is None:
                continue
            if rc == 1:
                self.cache_in_use -= 1
                self.evictable[h] = None
            self.cache[h] = max(rc - 1, 0)

    def _lookup(self, lv: _Live) -> int:
        """Cached prefix of an admission: whole blocks, at most prompt - 1 tokens."""
        if not self.cfg.prefix_caching or not lv.req.hashes:
            return 0
        b, n = self.cfg.block_size, 0
        limit = (lv.total - 1) // b
        for h in lv.req.hashes[:limit]:
            if h not in self.cache:
                break
            n += 1
        return n * b

    # requests ----------------------------------------------------------------------------------
    def submit(self, req: SimRequest, now_s: float) -> None:
        req.arrival_s, req.engine = now_s, self.index
        self._seq += 1
        self.inbox.append(_Live(req, self._seq))
        self.outstanding += 1

    def has_work(self) -> bool:
        return bool(self.running or self.waiting or self.inbox)

    def abort(self, req: SimRequest) -> None:
        """Drop a request its client left, as vLLM aborts it (call between steps): out of the queues, or ended
        like a finish with its blocks freed."""
        for q in (self.inbox, self.waiting):
            lv = next((x for x in q if x.req is req), None)
            if lv is not None:
                q.remove(lv)
                self.outstanding -= 1
                return
        lv = next((x for x in self.running.values() if x.req is req), None)
        if lv is not None:
            self._finish(lv, self.step)

    def _hold(self, lv: _Live, tokens: int) -> int:
        """Set lv's private blocks to those of `tokens` tokens outside its cached full blocks; the change."""
        new = max(-(-tokens // self.cfg.block_size) - len(lv.refs), 0)
        delta = new - lv.priv_blocks
        lv.priv_blocks = new
        self.private_blocks += delta
        return delta

    def _need(self, lv: _Live, tokens: int) -> int:
        return max(-(-tokens // self.cfg.block_size) - len(lv.refs), 0) - lv.priv_blocks

    def _register(self, lv: _Live, upto: int) -> None:
        """Prompt blocks completed up to `upto` tokens go into the prefix cache (prefix caching on)."""
        if not self.cfg.prefix_caching:
            return
        hs = lv.req.hashes
        full = min(upto // self.cfg.block_size, len(hs))
        while len(lv.refs) < full:
            h = hs[len(lv.refs)]
            self._ref(h)
            lv.refs.append(h)

    def _to_decode(self, lv: _Live, step: int) -> None:
        L = self.cfg.acceptance_length
        self.private_blocks -= lv.priv_blocks
        lv.priv_blocks = 0
        lv.dec_step, lv.dec_epoch = step, lv.dec_epoch + 1
        ctx = float(lv.total)
        priv = ctx - len(lv.refs) * self.cfg.block_size
        lv.ctx0, lv.priv0 = ctx, priv
        self.n_dec += 1
        self.ctx_a += ctx - step * L
        self.priv_a += priv - step * L
        left = lv.req.output_len - lv.generated
        heapq.heappush(self.finish_heap, (step + max(math.ceil(left / L), 0), lv.seq, lv.dec_epoch, lv))

    def _leave_decode(self, lv: _Live, step: int) -> int:
        """Remove from the decode group after `step`; returns the tokens it generated while decoding."""
        L = self.cfg.acceptance_length
        self.n_dec -= 1
        self.ctx_a -= lv.ctx0 - lv.dec_step * L
        self.priv_a -= lv.priv0 - lv.dec_step * L
        lv.dec_epoch += 1
        n = min(int((step - lv.dec_step) * L), lv.req.output_len - lv.generated)
        lv.dec_step = -1
        return n

    def _preempt(self, step: int, chunks: dict[int, tuple[_Live, int]]) -> int:
        """Preempt the newest running request (recompute); returns the budget its chunk this step held
        (-1 when nothing runs)."""
        if not self.running:
            return -1
        _, lv = self.running.popitem(last=True)
        if lv.dec_step >= 0:
            lv.generated += self._leave_decode(lv, step - 1)
            runs = lv.req.token_steps
            runs[-1] = (runs[-1][0], step - 1)
        self.private_blocks -= lv.priv_blocks
        lv.priv_blocks = 0
        freed = chunks.pop(lv.seq, (lv, 0))[1]
        self._unref(lv.refs)
        lv.refs, lv.computed = [], 0
        lv.total = lv.req.prompt_len + lv.generated
        lv.req.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(lv)
        return freed

    # one step ----------------------------------------------------------------------------------
    def start_step(self, now_s: float, horizon_s: float = math.inf) -> float | None:
        """Schedule and time the next step starting at now_s; None when there is nothing to do.

        Decode-only stretches run as one macro step (`_span`): nothing can change the batch before the next
        finish, the step at which the KV pool would run out, or (when a new request could be admitted)
        the next event of the cluster at `horizon_s`."""
        cfg, k = self.cfg, self.step
        # async scheduling: the step after a running one was scheduled when that one started
        idle = not self.running and not self.waiting
        visible = self.last_start_s if cfg.async_scheduling and self.last_end_s == now_s and not idle else now_s
        while self.inbox and self.inbox[0].req.arrival_s <= visible:
            self.waiting.append(self.inbox.popleft())
        if not self.running and not self.waiting:
            self.busy = False
            return None
        budget = cfg.max_num_batched_tokens - self.n_dec * (cfg.spec_tokens + 1)
        chunks: dict[int, tuple[_Live, int]] = {}
        preempted = False
        # 1. running decodes (their lookahead slots), then running partial prefills, oldest first
        while self.n_dec and not self._fits(0.0, k, self.n_dec * cfg.spec_tokens):
            self._preempt(k, chunks)
            preempted = True
        for lv in list(self.running.values()):
            if budget <= 0:
                break
            if lv.dec_step >= 0 or lv.seq not in self.running:
                continue
            n = min(lv.total - lv.computed, budget)
            while not self._fits(self._need(lv, lv.computed + n), k) and lv.seq in self.running:
                budget += self._preempt(k, chunks)
                preempted = True
            if lv.seq not in self.running:
                break
            self._hold(lv, lv.computed + n)
            chunks[lv.seq] = (lv, n)
            budget -= n
        # 2. waiting, only when nothing was preempted
        while not preempted and budget > 0 and self.waiting and len(self.running) < cfg.max_num_seqs:
            lv = self.waiting[0]
            hit = self._lookup(lv)
            for h in lv.req.hashes[: hit // cfg.block_size]:
                self._ref(h)
                lv.refs.append(h)
            n = min(lv.total - hit, budget)
            if not self._fits(self._need(lv, hit + n), k):
                self._unref(lv.refs)
                lv.refs = []
                break
            lv.computed = hit
            if lv.req.preemptions == 0:
                lv.hit_tokens = hit
                self.prefix_hit_tokens += hit
                self.prompt_tokens += lv.req.prompt_len
            self.waiting.popleft()
            self.running[lv.seq] = lv
            self._hold(lv, hit + n)
            chunks[lv.seq] = (lv, n)
            budget -= n
        self._evict_to(k)
        n_dec = self.n_dec
        if not n_dec and not chunks:
            self.busy = False
            return None
        ctx = (self.ctx_a + n_dec * k * cfg.acceptance_length) / n_dec if n_dec else 0.0
        dt_model = self.timer(n_dec, ctx, [(float(lv.computed), float(n)) for lv, n in chunks.values()])
        dt = dt_model * self.jitter.one() if self.jitter else dt_model
        self._chunks = list(chunks.values())
        self._ends = None
        self.busy, self.last_start_s = True, now_s
        self.last_end_s = now_s + dt
        if not chunks and not self.inbox and not preempted:
            blocked = bool(self.waiting) or len(self.running) >= cfg.max_num_seqs
            self._span(now_s, dt, dt_model, ctx, math.inf if blocked else horizon_s)
        return self.last_end_s

    def _span(self, now_s: float, dt0: float, model0: float, ctx0: float, horizon_s: float) -> None:
        """Extend a decode-only step (dt0 seconds; the step model's model0 before jitter) to the m steps before
        anything can change; their durations are interpolated linearly in context between the first and the
        last (the step model is close to linear in context over a stretch), each with its own jitter."""
        import numpy as np

        cfg, k, n, L = self.cfg, self.step, self.n_dec, self.cfg.acceptance_length
        heap = self.finish_heap
        while heap and (heap[0][2] != heap[0][3].dec_epoch or heap[0][3].dec_step < 0):
            heapq.heappop(heap)
        m = heap[0][0] - k + 1 if heap else 1
        b = cfg.block_size
        room = (cfg.num_blocks - self.cache_in_use - self.private_blocks) * b - n * (b - 1) / 2.0 \
            - self.priv_a - n * cfg.spec_tokens
        m = min(m, int(math.floor(room / (n * L))) - k + 1)
        if m <= 1 or now_s + dt0 >= horizon_s:
            return
        dt1 = self.timer(n, ctx0 + (m - 1) * L, ())
        steps = np.linspace(model0, dt1, m)
        if self.jitter:
            steps[1:] *= self.jitter.peek(m - 1)
        steps[0] = dt0
        ends = now_s + np.cumsum(steps)
        if horizon_s < math.inf:
            m = max(int(np.searchsorted(ends, horizon_s, side="right")), 1)
            ends = ends[:m]
        if m <= 1:
            return
        if self.jitter:
            self.jitter.advance(m - 1)
        self._ends = ends
        self.last_start_s = float(ends[-2])
        self.last_end_s = float(ends[-1])

    def end_step(self, now_s: float) -> list[SimRequest]:
        """Apply the step that ends at now_s: tokens, first tokens, finished requests."""
        cfg = self.cfg
        span = self._ends
        m = 1 if span is None else len(span)
        if span is None:
            self.step_end_s.append(now_s)
        else:
            self.step_end_s.extend(span.tolist())
            self.step_end_s[-1] = now_s
        self.step += m - 1
        k = self.step
        self.tokens_out += self.n_dec * cfg.acceptance_length * m
        done: list[SimRequest] = []
        for lv, n in self._chunks:
            lv.computed += n
            self._register(lv, lv.computed)
            self._hold(lv, lv.computed)  # registered full blocks leave the private count
            if lv.computed < lv.total:
                continue
            # prefill complete: first token now, then the decode group (its blocks go to the aggregate)
            req = lv.req
            if req.first_token_s is None:
                req.first_token_s = now_s
            lv.generated += 1
            self.tokens_out += 1
            req.token_steps.append((k, k))
            if lv.generated >= req.output_len:
                done.append(self._finish(lv, k))
            else:
                self._to_decode(lv, k)
        heap = self.finish_heap
        while heap and heap[0][0] <= k:
            _, _, epoch, lv = heapq.heappop(heap)
            if epoch != lv.dec_epoch or lv.dec_step < 0:
                continue
            done.append(self._finish(lv, k))
        self._chunks = []
        self.step = k + 1
        return done

    def _finish(self, lv: _Live, step: int) -> SimRequest:
        req = lv.req
        if lv.dec_step >= 0:
            self._leave_decode(lv, step)
            req.token_steps[-1] = (req.token_steps[-1][0], step)
        self.private_blocks -= lv.priv_blocks
        lv.priv_blocks = 0
        lv.generated = req.output_len
        self.running.pop(lv.seq, None)
        self._unref(lv.refs)
        if self.cfg.prefix_caching and req.out_hashes is not None:
            for h in req.out_hashes(req.output_len):  # the finished sequence's full blocks stay cached
                if h not in self.cache:
                    self.cache[h] = 0
                    self.evictable[h] = None
        req.cached_tokens = lv.hit_tokens
        self.outstanding -= 1
        self._evict_to(step + 1)
        return req
