"""Engine kind "openai": an OpenAI-compatible endpoint that already runs (a vLLM we do not own,
a gateway, a provider API).

Nothing is started or stopped: the endpoint's life is not ours, so `alive()` is always True and a
failed request fails its point, never "restarts" anything. The model directory is still resolved
locally so prompts can be built with exact lengths from the served model's tokenizer (or its
catalog twin's vocabulary). The API key is read from the environment variable the sweep names
at the moment a point needs it, so it never reaches a results file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.config.sweep import EngineSpec, ServerSpec
from bench.engines.base import tokenizer_counter
from bench.errors import UserInputError
from bench.measure.client import ClientConfig


class OpenAIEngine:
    kind = "openai"
    starts_server = False
    uses_local_gpus = False
    batch = False

    def __init__(self, spec: ServerSpec, engine: EngineSpec, log_path: Path, on_gpu: bool) -> None:
        from bench.engines.modeldir import load_tokenizer, resolve_model_path

        self.spec, self.engine, self.log_path, self.on_gpu = spec, engine, log_path, on_gpu
        self.model_path, self.materialized = resolve_model_path(spec.model, spec.quantization)
        self.tokenizer: Any = load_tokenizer(self.model_path)

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

    def failure_reason(self) -> str:
        return "endpoint unavailable"

    def client_config(self, endpoint: str, timeout_s: float) -> ClientConfig:
        eng = self.engine
        key = os.environ.get(eng.api_key_env) if eng.api_key_env else None
        if eng.api_key_env and not key:
            raise UserInputError(f"engine.api_key_env: environment variable {eng.api_key_env} is not set")
        return ClientConfig(base_url=eng.base_url or "", model=eng.served_model_name or self.spec.model,
                            endpoint=endpoint, api_key=key, timeout_s=timeout_s,
                            ignore_eos=eng.pin_output_length, ca_file=eng.ca_file, verify_tls=eng.verify_tls)

    def count_tokens(self) -> Callable[[str], int] | None:
        return tokenizer_counter(self.tokenizer)
