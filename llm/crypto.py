"""Provider API keys at rest: Fernet tokens, keyed from PARLEY_ENCRYPTION_KEY.

PARLEY_ENCRYPTION_KEY may list several keys (comma-separated): the first encrypts, all
decrypt, so keys can be rotated. Production start-up requires it (project/security.py); only
embedded mode, without it, derives a key from SECRET_KEY.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class KeyUnreadable(Exception):
    """A stored key was encrypted with a key we no longer hold."""


def _fernet_key(secret: str) -> bytes:
    # A ready Fernet key (32 url-safe base64 bytes) is used as is; anything else is hashed.
    try:
        if len(base64.urlsafe_b64decode(secret.encode())) == 32:
            return secret.encode()
    except ValueError:
        pass
    digest = hashlib.sha256(b"parley-provider-keys:" + secret.encode()).digest()
    return base64.urlsafe_b64encode(digest)


def _fernet() -> MultiFernet:
    configured = [k.strip() for k in settings.PARLEY_ENCRYPTION_KEY.split(",") if k.strip()]
    secrets = configured or [settings.SECRET_KEY]
    return MultiFernet([Fernet(_fernet_key(secret)) for secret in secrets])


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise KeyUnreadable("the stored API key cannot be decrypted") from None
