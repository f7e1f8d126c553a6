"""Multi-turn sessions (kind multiturn): a conversation whose every turn resends what came before.

The semantics are in bench.measure.workloads (which re-exports these names); bench.measure.loadgen
runs a session's turns in order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from bench.config.workload_spec import WorkloadSpec
from bench.measure.client import RequestSpec
from bench.measure.prompts import PromptFactory, ranged_len


@dataclass
class Turn:
    """One planned turn: the new user message, the output length asked for, the pause before it."""

    user_text: str
    output_len: int
    think_s: float  # pause after the previous answer (0 for the first turn)


@dataclass
class Session:
    """One conversation. `request(t)` builds turn t from what the server answered so far.

    Turn t's prompt is the whole conversation: system prompt, every earlier user message and the
    server's answer to it, then turn t's user message. `add_answer` folds an answer back.
    """

    session_id: int
    turns: list[Turn]
    factory: PromptFactory
    endpoint: str = "completions"
    system_text: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    arrival_s: float | None = None  # sessions are started by the load generator, never by a trace

    def messages(self, t: int) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system_text}] if self.system_text else []
        return [*head, *self.history, {"role": "user", "content": self.turns[t].user_text}]

    def request(self, t: int) -> RequestSpec:
        if len(self.history) != 2 * t:
            raise ValueError(f"turn {t} needs the answers of turns 0..{t - 1} first")
        msgs = self.messages(t)
        text = self.factory.render_chat(msgs)
        n = self.factory.count(text)
        if n is None:  # a word vocabulary without a tokenizer: one word is one token
            n = len(text.split())
        turn = self.turns[t]
        if self.endpoint == "chat":
            return RequestSpec(prompt=None, messages=msgs, input_len=n, output_len=turn.output_len,
                               session_id=self.session_id, turn=t + 1)
        return RequestSpec(prompt=text, input_len=n, output_len=turn.output_len,
                           session_id=self.session_id, turn=t + 1)

    def add_answer(self, t: int, answer: str) -> None:
        """Fold turn t's answer (the text the server streamed) into the conversation."""
        self.history += [{"role": "user", "content": self.turns[t].user_text},
                         {"role": "assistant", "content": answer.strip()}]


def _think_s(spec: WorkloadSpec, rng: random.Random) -> float:
    if spec.think_time_s <= 0:
        return 0.0
    return spec.think_time_s if spec.think_time_dist == "fixed" else rng.expovariate(1.0 / spec.think_time_s)


def iter_sessions(spec: WorkloadSpec, factory: PromptFactory, seed_offset: int = 0) -> Iterator[Session]:
    """Endless sessions of a multiturn workload; same spec and seed offset, same sessions."""
    rng = random.Random(spec.seed * 1_000_003 + seed_offset)
    system = None
    if spec.system_prompt_len:  # one system prompt for the workload (seed only): every session shares it
        system = factory.make(spec.system_prompt_len, random.Random(spec.seed * 1_000_003 - 2))
    k = 0
    while True:
        n_turns = ranged_len(rng, spec.turns, spec.turns_range_ratio)
        turns = []
        for t in range(n_turns):
            n_user = ranged_len(rng, spec.input_len, spec.range_ratio)
            turns.append(Turn(user_text=factory.make(n_user, rng),
                              output_len=ranged_len(rng, spec.output_len, spec.range_ratio),
                              think_s=_think_s(spec, rng) if t else 0.0))
        yield Session(session_id=k, turns=turns, factory=factory, endpoint=spec.endpoint, system_text=system)
        k += 1
