"""`engine:` of a sweep file: which engine serves the points, and what each engine kind needs.

Why its own module: the engine block is read by the engines layer (bench.engines.registry checks
that it runs exactly these kinds) without the rest of the sweep expansion. Re-exported by
bench.config.sweep, where a sweep file's models are assembled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from bench.config.base import StrictModel


@dataclass(frozen=True)
class EngineKind:
    """What a sweep file must give, and what it defaults to, for one `engine.kind`.

    Only the config-side facts live here (config must not import engines). A kind is registered once,
    by `register_engine_kind` (the built-in kinds below; a new engine module passes its EngineKind to
    `bench.engines.base.register_engine`, which calls it), and bench.engines.registry checks that
    every registered kind has the class that runs it.
    """

    pins_output_length: bool  # default of engine.ignore_eos: send ignore_eos/min_tokens
    needs_base_url: bool  # serves through an endpoint that already runs
    one_batch_per_point: bool  # a point is one offline batch: one concurrency label, no request rate
    # the `engine:` block's model for this kind: EngineSpec, or a subclass that adds the kind's own
    # optional fields (`engine: {kind: virtual, seed: 3}`); None = EngineSpec
    schema: type[EngineSpec] | None = None


ENGINE_KINDS: dict[str, EngineKind] = {}


def register_engine_kind(name: str, kind: EngineKind) -> EngineKind:
    """Make `engine.kind: <name>` valid in a sweep file, with what the kind needs (registered once)."""
    if name in ENGINE_KINDS and ENGINE_KINDS[name] != kind:
        raise ValueError(f"engine kind {name!r} is registered twice with different facts")
    if kind.schema is not None and not issubclass(kind.schema, EngineSpec):
        raise TypeError(f"engine kind {name!r}: its schema must subclass EngineSpec")
    ENGINE_KINDS[name] = kind
    return kind


def _expected(names: list[str]) -> str:
    """Names as pydantic's literal_error lists them: 'a', 'b' or 'c'."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


class EngineSpec(StrictModel):
    """Which engine serves the points: a vLLM server we start, or an endpoint that already runs."""

    kind: str = Field(
        "vllm", description="a registered kind (ENGINE_KINDS): vllm: start a server; openai: an endpoint at base_url; "
        "vllm-offline: LLM.generate batch"
    )
    startup_timeout_s: float = Field(600.0, gt=0)
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    cpu_kvcache_space_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE, applied only on CPU")
    cpu_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="applied only on CPU")
    # kinds that need a base_url (openai): an already-running server or a provider API.
    base_url: str | None = Field(None, description=(
        "a server root (http://host:8000, or a proxy prefix; /v1/... is appended) or an OpenAI-SDK-style API root "
        "whose last segment is a version (https://api.example.com/v1, .../api/paas/v4; only /completions or "
        "/chat/completions is appended). Redirects are not followed."))
    ca_file: str | None = Field(None, description="https: PEM CA bundle to trust instead of the system store")
    verify_tls: bool = Field(True, description="https: False skips certificate checks (self-signed test servers)")
    kernel_timestamps: bool = Field(True, description=(
        "plain http on Linux: time each chunk by the kernel's receive stamp (SO_TIMESTAMPNS), which event-loop "
        "lag does not move; false: stamp when the client's loop reads it, as vLLM's benchmark client does"))
    api_key_env: str | None = Field(None, description="name of the env var holding the API key")
    served_model_name: str | None = None
    ignore_eos: bool | None = Field(
        None, description="send vLLM's ignore_eos/min_tokens to pin output length; default on for vllm, off for openai"
    )

    @property
    def pin_output_length(self) -> bool:
        return self.ignore_eos if self.ignore_eos is not None else self.capabilities.pins_output_length

    @property
    def capabilities(self) -> EngineKind:
        return ENGINE_KINDS[self.kind]

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in ENGINE_KINDS:
            raise PydanticCustomError("literal_error", "Input should be {expected}",
                                      {"expected": _expected(list(ENGINE_KINDS))})
        return v

    @classmethod
    def for_kind(cls, data: Any) -> Any:
        """The `engine:` block validated by its kind's schema (a registered subclass), or `data` unchanged."""
        if isinstance(data, dict):
            kind = ENGINE_KINDS.get(str(data.get("kind", "vllm")))
            if kind is not None and kind.schema is not None and kind.schema is not cls:
                return kind.schema.model_validate(data)
        return data

    @model_validator(mode="after")
    def _check_base_url(self) -> EngineSpec:
        if self.capabilities.needs_base_url and not self.base_url:
            raise ValueError(f"engine.base_url is required when engine.kind is {self.kind!r}")
        if self.base_url is not None:
            check_base_url(self.base_url)
        return self


# the built-in kinds; their classes are in bench.engines (vllm_server, openai, vllm_offline)
register_engine_kind("vllm", EngineKind(pins_output_length=True, needs_base_url=False, one_batch_per_point=False))
register_engine_kind("openai", EngineKind(pins_output_length=False, needs_base_url=True, one_batch_per_point=False))
register_engine_kind("vllm-offline", EngineKind(pins_output_length=False, needs_base_url=False,
                                                one_batch_per_point=True))


# query parameters that carry a credential (api_key, key, access_token, sig, X-Amz-Signature, ...)
_CREDENTIAL_PARAM = re.compile(r"key|token|secret|passw|pwd|auth|sig|cred", re.IGNORECASE)
CREDENTIALS_IN_URL = ("engine.base_url must not carry credentials (user:password@ or a key in the query string): "
                      "put the key in an environment variable and name it in engine.api_key_env")


def check_base_url(url: str) -> None:
    """A base_url must be http(s)://host[:port][/path]: checked when the sweep is read, not when the
    first request fails after a run dir exists (`localhost:8000` parses as scheme "localhost").

    Credentials in it (user:password@, a key in the query string) are refused, without echoing the URL:
    they would be written to sweep.yaml and printed; a key belongs in `api_key_env`."""
    try:
        u = urlsplit(url.strip())
        u.port  # noqa: B018 - raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        u = None
    authority = url.strip().split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0]  # parsed or not
    query = url.split("?", 1)[1] if "?" in url else ""
    if "@" in authority or any(_CREDENTIAL_PARAM.search(name) for name, _ in parse_qsl(query, True)):
        raise ValueError(CREDENTIALS_IN_URL)
    if u is None or u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"engine.base_url must be http(s)://host[:port][/path] (got {url!r})")
