"""The one redaction path for secrets (API keys) in text that is written or printed: `redact`.

Why more than the raw key: a gateway or provider that echoes the request back in an error body may show
the key JSON-escaped (`\\/`, `\\u00e9`), URL-encoded (`quote`, `quote_plus`) or base64-encoded (a Basic
`Authorization` header: base64 of `user:key`). `secret_forms` lists every form; base64 is matched at each of
the three byte alignments the key can have inside a longer encoded string, by the characters that depend on
the key's bytes alone. Every error text the client records goes through `redact` (bench.measure.client), and
the sweep redacts a point's error again before its row is written (bench.sweep.session).
"""

from __future__ import annotations

import base64
import json
import re
from functools import lru_cache
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "redact", "secret_forms"]

MASK = "***"
MIN_BASE64_CORE = 8  # shorter base64 cores of a short key could match unrelated text: not used


def _base64_cores(raw: bytes) -> set[str]:
    """The base64 characters (standard and URL-safe alphabets) fixed by `raw` alone, at byte offsets 0, 1, 2."""
    out: set[str] = set()
    n_bits = 8 * len(raw)
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + raw + b"\0\0").decode()
        first = -(-8 * k // 6)  # the first character whose 6 bits all come from the key
        last = (8 * k + n_bits) // 6  # one past the last such character
        core = enc[first:last]
        if len(core) >= MIN_BASE64_CORE:
            out.add(core)
            out.add(core.replace("+", "-").replace("/", "_"))
    whole = base64.b64encode(raw).decode()
    out.update({whole, whole.rstrip("="), base64.urlsafe_b64encode(raw).decode()})
    return out


def _json_escapes(text: str) -> set[str]:
    """`text` as it appears inside a JSON string: ASCII-escaped or not, with `/` escaped or not."""
    ascii_ = json.dumps(text)[1:-1]
    return {ascii_, json.dumps(text, ensure_ascii=False)[1:-1], ascii_.replace("/", "\\/")}


def secret_forms(secret: str) -> set[str]:
    """The raw secret and its JSON-escaped, URL-encoded and base64 forms (the ones a server may echo); each
    also JSON-escaped once and twice more (an echoed form inside a JSON error body, itself quoted again)."""
    raw = secret.encode()
    forms = {secret, quote(secret), quote(secret, safe=""), quote_plus(secret), quote_plus(secret, safe="")}
    for q in list(forms):
        if "%" in q:
            forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), q))  # lower-case hex digits
    forms |= _base64_cores(raw)
    for _ in range(2):
        forms |= {e for f in forms for e in _json_escapes(f)}
    return {f for f in forms if f}


@lru_cache(maxsize=32)
def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    forms = sorted({f for s in secrets for f in secret_forms(s)}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, forms))) if forms else None


def redact(text: str | None, *secrets: str | None) -> str | None:
    """`text` with every form of every non-empty secret replaced by `***` (None stays None)."""
    if not text:
        return text
    keys = tuple(sorted({s for s in secrets if s}))
    pattern = _pattern(keys) if keys else None
    return pattern.sub(MASK, text) if pattern is not None else text
