"""Issue 25: one redaction path for secrets (bench.measure.redact) masks the key in every form a server may
echo, and the client masks before it cuts an error text (a cut must not leave part of the key)."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, quote_plus

import pytest

from bench.measure.redact import MASK, redact
from tests.unit.measure.test_client_http import _send_all, _Server

KEY = "sk-Ab/Cd+Ef=Gh&Ij Kl\"Mn\u00e9Op"


@pytest.mark.parametrize("form", [
    KEY, json.dumps(KEY)[1:-1], json.dumps(KEY, ensure_ascii=False)[1:-1], json.dumps(KEY)[1:-1].replace("/", "\\/"),
    quote(KEY), quote(KEY, safe=""), quote_plus(KEY), re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(KEY)),
    base64.b64encode(KEY.encode()).decode(), base64.urlsafe_b64encode(KEY.encode()).decode(),
    base64.b64encode(KEY.encode()).decode().rstrip("="), json.dumps(quote_plus(KEY))[1:-1],
    json.dumps(json.dumps(KEY)[1:-1])[1:-1],
], ids=["raw", "json", "json-utf8", "json-slash", "quote", "quote-safe", "quote_plus", "quote-lower-hex",
        "base64", "base64url", "base64-unpadded", "json-of-quote_plus", "json-twice"])
def test_every_form_of_the_key_is_masked(form):
    text = redact(f"HTTP 401: key {form} rejected", KEY)
    assert text == f"HTTP 401: key {MASK} rejected"


@pytest.mark.parametrize("prefix", [b"u:", b"us:", b"use:", b"Bearer "])
def test_base64_of_the_key_inside_a_longer_credential_is_masked_at_every_alignment(prefix):
    blob = base64.b64encode(prefix + KEY.encode() + b"!").decode()
    text = redact(f"Authorization: Basic {blob}", KEY)
    assert MASK in text
    # what is left around the mask decodes to no more than a byte of the key at either end
    left, right = text.removeprefix("Authorization: Basic ").split(MASK)
    assert len(left) <= len(base64.b64encode(prefix)) and len(right) <= 4


def test_nothing_else_changes_and_no_key_is_a_no_op():
    assert redact("HTTP 401: invalid key", KEY) == "HTTP 401: invalid key"
    assert redact("HTTP 401: sk-Ab", None) == "HTTP 401: sk-Ab"
    assert redact(None, KEY) is None
    assert redact(f"{KEY} and {KEY}", KEY, "other-secret-42", None) == f"{MASK} and {MASK}"
    assert redact("other-secret-42", KEY, "other-secret-42") == MASK


def test_the_client_masks_the_key_before_cutting_a_long_error_body():
    # the key straddles the 300-character cut of the error text: masking after the cut left its first part
    body = ("x" * 290 + quote_plus(KEY) + "y" * 50).encode()
    server = _Server(replies=[[b"HTTP/1.1 401 No\r\nContent-Length: %d\r\n\r\n" % len(body), body]])
    (rec,) = _send_all(server, api_key=KEY)
    assert rec.http_status == 401 and rec.error is not None
    assert rec.error.endswith("x" * 290 + MASK + "y" * 7)
    assert quote_plus(KEY)[:6] not in rec.error


def test_the_client_masks_the_key_in_an_unexpected_event_before_cutting_it():
    sse = b"data: [" + json.dumps("z" * 95 + KEY).encode() + b"]\n\ndata: [DONE]\n\n"
    server = _Server(replies=[[b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n"
                               % len(sse), sse]])
    (rec,) = _send_all(server, api_key=KEY)
    assert not rec.ok and rec.error is not None and rec.error.startswith("unexpected event: ")
    assert KEY[:4] not in rec.error and json.dumps(KEY)[1:5] not in rec.error
