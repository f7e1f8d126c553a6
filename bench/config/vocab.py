"""The word-level vocabulary of the tiny dummy models: special tokens, then pronounceable words.

Why here, at the bottom of the layers: two layers need the same list. `bench.engines.modeldir`
writes it as the tokenizer of a materialized model directory (one whitespace-separated word is one
token), and `bench.measure.prompts` joins its words into prompts of an exact token count. Neither
may reach into the other for it, so the list lives below both. Changing the words changes every
materialized tokenizer: bump `bench.engines.modeldir.TOKENIZER_VERSION` with it.
"""

from __future__ import annotations

SPECIAL_TOKENS = ("<unk>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>")


def vocabulary(vocab_size: int) -> list[str]:
    """Special tokens, then deterministic pronounceable words (ba, be, ... baba, babe, ...)."""
    consonants, vowels = "bdfghklmnprstvz", "aeiou"
    syllables = [c + v for c in consonants for v in vowels]
    words: list[str] = []
    n_words = vocab_size - len(SPECIAL_TOKENS)
    for a in syllables:
        for b in [""] + syllables:
            words.append(a + b)
            if len(words) == n_words:
                return list(SPECIAL_TOKENS) + words
    raise ValueError(f"vocab_size {vocab_size} is larger than this generator supports")
