"""Standard Webhooks signing (https://www.standardwebhooks.com/): pure functions, no I/O.

A secret is written ``whsec_<base64 key>``; the signature of a delivery is
``v1,<base64(HMAC-SHA256(key, f"{msg_id}.{timestamp}.{body}"))>``, sent with the message
id and the unix timestamp in the ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature`` headers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


MIN_KEY_BYTES = 24  # the spec: a key of 24 to 64 bytes


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (base64 padded or not, as the spec's
    libraries accept); ValueError saying what is expected (a key under 24 bytes included)."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret must be whsec_<base64 key> (the Standard Webhooks format)")
    text = secret[len(SECRET_PREFIX):]
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be whsec_<base64 key>; the part after whsec_ "
                         "is not base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a webhook secret's key must have at least {MIN_KEY_BYTES} bytes (Standard "
                         f"Webhooks), got {len(key)}")
    return key


def check_secret(secret: str | None) -> str | None:
    """``secret`` when None or a valid ``whsec_`` secret (for pydantic validators)."""
    if secret is not None:
        secret_key(secret)
    return secret


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) of one delivery."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(msg_id: str, timestamp: int, body: bytes, secret: str | None) -> dict[str, str]:
    """The Standard Webhooks headers; ``webhook-signature`` only when there is a secret."""
    out = {"webhook-id": msg_id, "webhook-timestamp": str(int(timestamp))}
    if secret is not None:
        out["webhook-signature"] = signature(secret, msg_id, int(timestamp), body)
    return out
