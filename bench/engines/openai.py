"""Engine kind "openai": an OpenAI-compatible endpoint that already runs (a vLLM we do not own,
a gateway, a provider API).

Nothing is started or stopped: the endpoint's life is not ours, so `alive()` is always True and a
failed request fails its point, never "restarts" anything. `start()` only checks, before any point is
measured, that the endpoint serves the model asked for (its `GET /models` lists it). The model
directory is still resolved locally so prompts can be built with exact lengths from the served model's tokenizer (or its
catalog twin's vocabulary). The API key is read from the environment variable the sweep names
at the moment a point needs it, so it never reaches a results file.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from bench.engines.base import EngineStartError, NoProcessEngine, register_engine
from bench.engines.identity import MODELS_TIMEOUT_S, serves_model_problem
from bench.errors import UserInputError
from bench.measure.client import ClientConfig, _ssl_context, api_path


@register_engine
class OpenAIEngine(NoProcessEngine):
    kind = "openai"
    starts_server = False
    uses_local_gpus = False
    batch = False

    def start(self) -> None:
        """Before measuring: the endpoint must serve the model the sweep asks for (issue 25: whatever answered at
        base_url was measured). Raises EngineStartError naming what it serves instead: the group's points fail
        with that reason and no request is sent."""
        cfg = self.client_config("completions", MODELS_TIMEOUT_S)
        problem = serves_model_problem(models_url(cfg.base_url), cfg.model, cfg.api_key,
                                       _ssl_context(cfg) if cfg.base_url.strip().startswith("https") else None)
        if problem is not None:
            raise EngineStartError(problem)

    def failure_reason(self) -> str:
        return "endpoint unavailable"

    def client_config(self, endpoint: str, timeout_s: float) -> ClientConfig:
        eng = self.engine
        key = os.environ.get(eng.api_key_env) if eng.api_key_env else None
        if eng.api_key_env and not key:
            raise UserInputError(f"engine.api_key_env: environment variable {eng.api_key_env} is not set")
        return ClientConfig(base_url=eng.base_url or "", model=eng.served_model_name or self.spec.model,
                            endpoint=endpoint, api_key=key, timeout_s=timeout_s,
                            ignore_eos=eng.pin_output_length, ca_file=eng.ca_file, verify_tls=eng.verify_tls,
                            kernel_timestamps=eng.kernel_timestamps)


def models_url(base_url: str) -> str:
    """`GET /models` beside the completions route the client posts to (`api_path`: a server root gets /v1)."""
    u = urlsplit(base_url.strip())
    api = api_path(u.path, "completions").removesuffix("/completions")
    return f"{u.scheme}://{u.netloc}{api}/models"
