"""What the sweep needs from an engine: the `Engine` protocol, shared by every kind.

Why a protocol and capabilities instead of `if engine.kind == ...`: the session that measures a
server group (bench.sweep.session) and the Ray executor only ask an engine what it can do
(`starts_server`, `uses_local_gpus`, `batch`) and call the same methods on every kind. A new kind
(another server, a speculative-decoding setup) is one class in `bench.engines.registry`; no
caller changes. Engines know nothing about workloads: prompts are built by the sweep from
`model_path`, and measuring is the measure layer's job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from bench.config.engine_spec import EngineKind, register_engine_kind
from bench.config.sweep import EngineSpec, ServerSpec
from bench.errors import UserInputError

if TYPE_CHECKING:
    from bench.measure.client import ClientConfig


class EngineStartError(RuntimeError):
    """The engine did not become ready; the message carries the reason from its log."""


@runtime_checkable
class Engine(Protocol):
    """One server group's engine: created per ServerSpec, started once, restarted when it dies."""

    kind: ClassVar[str]
    # True when start() launches a server process (a start is counted, and costs startup time).
    starts_server: ClassVar[bool]
    # True when the engine runs on this machine's GPUs: GPU telemetry is sampled for its points
    # and a Ray task for its group requests the spec's GPUs.
    uses_local_gpus: ClassVar[bool]
    # True when a point is one offline batch (`run_batch`), not a stream of HTTP requests.
    batch: ClassVar[bool]

    model_path: str  # local model directory (or hub id) the engine loads; prompts are built from it
    tokenizer: Any  # a `tokenizers.Tokenizer` of model_path, or None

    def start(self) -> None:
        """Make the engine ready for requests; raises EngineStartError with the log's reason."""

    def stop(self) -> None:
        """Stop what start() launched, children included; a no-op when nothing runs."""

    def alive(self) -> bool:
        """False once a started engine has died (the session then restarts it)."""

    def failure_reason(self) -> str:
        """Why the engine died or failed, read from its log."""

    @property
    def pid(self) -> int | None:
        """The server's process (group) id, for progress events and tests; None without a process."""

    @property
    def startup_s(self) -> float:
        """Seconds the last start took (0.0 when nothing is started)."""

    def client_config(self, endpoint: str, timeout_s: float) -> ClientConfig:
        """How the streaming client reaches this engine for a point's requests."""

    def count_tokens(self) -> Callable[[str], int] | None:
        """The client-side token counter (a check on the server's usage), None without a tokenizer."""

    @classmethod
    def preflight(cls, specs: list[ServerSpec], sweep: Any = None) -> None:
        """Checks of this kind before anything starts (bench.sweep.prepare calls it once per run with the
        sweep): e.g. the installed engine version has every feature the specs use, or (virtual) the model
        fits the sweep's hardware. Raises UserInputError with one line."""

    @classmethod
    def stop_stale(cls, logs_dir: Path) -> list[int]:
        """On resume: stop what a killed earlier run of this run dir left running; the process groups stopped."""


@dataclass
class BatchResult:
    """Timing of one offline batch (what a `batch` engine's run_batch returns)."""

    elapsed_s: float  # wall time of the measured generate() call
    num_prompts: int
    completed: int
    input_tokens: int  # prompt tokens as the engine tokenized them
    output_tokens: int  # generated token ids


class BatchEngine(Engine, Protocol):
    """An engine with `batch = True`: a point is one offline batch instead of HTTP requests."""

    def run_batch(self, prompts: list[str], warmup: list[str], output_len: int, timeout_s: float) -> BatchResult:
        """Generate `prompts` after an unmeasured `warmup` batch; raises EngineStartError on failure."""


class EngineFactory(Protocol):
    """The constructor every registered engine class has."""

    def __call__(self, spec: ServerSpec, engine: EngineSpec, log_path: Path, on_gpu: bool) -> Engine: ...


ENGINES: dict[str, type[Engine]] = {}  # kind -> class; read it through bench.engines.registry


def register_engine(cls: type[Any] | None = None, *, config: EngineKind | None = None) -> Any:
    """Register an engine class under its `kind` (as a decorator: `@register_engine(config=EngineKind(...))`).

    `config` registers the kind with the config layer too (what a sweep file must give, and its
    `engine:` schema: EngineKind.schema, an EngineSpec subclass with the kind's own fields); the
    built-in kinds are already registered there (bench.config.engine_spec). A module registers its
    class when it is imported; bench.engines.registry imports every module of this package.
    """
    def add(c: type[Any]) -> type[Any]:
        if config is not None:
            register_engine_kind(c.kind, config)
        if ENGINES.get(c.kind, c) is not c:
            raise ValueError(f"engine kind {c.kind!r} is registered by two classes")
        ENGINES[c.kind] = c
        return c

    return add(cls) if cls is not None else add


def refuse_disagg(kind: str, specs: list[ServerSpec]) -> None:
    """`server.disagg` on a kind that cannot serve prefill/decode disaggregation (every kind but vllm, whose
    preflight checks the pools instead: bench.engines.disagg): one line before anything starts."""
    if any(s.disagg is not None for s in specs):
        raise UserInputError(f"server.disagg: engine.kind {kind} cannot run a disaggregated (prefill/decode) "
                             "deployment; use engine.kind vllm, or drop server.disagg")


def tokenizer_counter(tokenizer: Any) -> Callable[[str], int] | None:
    """Token count of a text with the served model's tokenizer (no special tokens), or None."""
    if tokenizer is None:
        return None
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


class LocalModelEngine:
    """Constructor and token counter every registered kind shares: the model directory is resolved
    locally (materialized for a quantization when needed) and its tokenizer loaded, so the sweep can
    build prompts of exact lengths whatever serves them. Subclasses add start/stop and the client."""

    def __init__(self, spec: ServerSpec, engine: EngineSpec, log_path: Path, on_gpu: bool) -> None:
        from bench.engines.modeldir import load_tokenizer, resolve_model_path

        self.spec, self.engine, self.log_path, self.on_gpu = spec, engine, log_path, on_gpu
        self.model_path, self.materialized = resolve_model_path(spec.model, spec.quantization)
        self.tokenizer: Any = load_tokenizer(self.model_path)

    def count_tokens(self) -> Callable[[str], int] | None:
        return tokenizer_counter(self.tokenizer)

    @classmethod
    def preflight(cls, specs: list[ServerSpec], sweep: Any = None) -> None:
        refuse_disagg(cls.kind, specs)  # type: ignore[attr-defined]  # every subclass has a kind

    @classmethod
    def stop_stale(cls, logs_dir: Path) -> list[int]:
        return []


class NoProcessEngine(LocalModelEngine):
    """A kind with no long-lived process of ours (an existing endpoint, per-batch children): start
    and stop do nothing, it never dies between points, and there is no pid or startup time."""

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def alive(self) -> bool:
        return True

    @property
    def pid(self) -> int | None:
        return None

    @property
    def startup_s(self) -> float:
        return 0.0
