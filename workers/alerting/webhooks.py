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


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ValueError saying what is expected."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret must be whsec_<base64 key> (the Standard Webhooks format)")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be whsec_<base64 key>; the part after whsec_ "
                         "is not base64") from None
    if len(key) < 16:
        raise ValueError(f"a webhook secret's key must have at least 16 bytes, got {len(key)}")
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
