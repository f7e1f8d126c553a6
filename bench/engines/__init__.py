"""Engines that serve points: a vLLM server we launch, or an OpenAI-compatible endpoint given by URL."""
