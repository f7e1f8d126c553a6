"""maas-bench: inference cost benchmarking for Model-as-a-Service lines.

Measure vLLM throughput and latency under quantization and batching configs, turn GPU-hours
into $/M tokens, and feed that into gross-margin calculations against an API price book.
"""

__version__ = "0.1.0"
