"""The e2e tests share the session's one real vLLM server: the `vllm_server` fixture of tests/conftest.py."""
