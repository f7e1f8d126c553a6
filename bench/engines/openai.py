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

from bench.engines.base import NoProcessEngine, register_engine
from bench.errors import UserInputError
from bench.measure.client import ClientConfig


@register_engine
class OpenAIEngine(NoProcessEngine):
    kind = "openai"
    starts_server = False
    uses_local_gpus = False
    batch = False

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
