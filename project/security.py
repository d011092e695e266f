"""Start-up refusal of secrets an attacker could guess.

Called from project/settings.py. In production (a database, Redis or Celery broker is
configured) DJANGO_SECRET_KEY must be strong and PARLEY_ENCRYPTION_KEY, which encrypts stored
provider API keys, must be set on its own: a key derived from DJANGO_SECRET_KEY would fall with
it. Outside production (embedded mode) the built-in key is accepted, but a key somebody set
while DEBUG is off must be strong too: that is a deployment in the making.

"Strong" is what Django's own `check --deploy` asks of SECRET_KEY (security.W009: at least 50
characters, at least 5 distinct ones, not a `django-insecure-` key) and not a known example.
"""

from __future__ import annotations

import base64
import binascii

from django.core.exceptions import ImproperlyConfigured

MIN_LENGTH = 50
MIN_DISTINCT = 5
# Values from .env.example, the docs and common templates: public, so as good as no secret.
EXAMPLE_SECRETS = frozenset(
    {"change-me", "changeme", "change_me", "secret", "your-secret-key", "replace-me", "xxx"}
)
GENERATE_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(50))"'
GENERATE_FERNET = (
    'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)


def secret_weakness(value: str) -> str | None:
    """Why `value` is not fit to be a production secret, or None if it is."""
    if value.strip().lower() in EXAMPLE_SECRETS or "change-me" in value.lower():
        return "it is an example value"
    if value.startswith("django-insecure-"):
        return "it is a django-insecure- key (made for development)"
    if len(value) < MIN_LENGTH:
        return f"it is shorter than {MIN_LENGTH} characters"
    if len(set(value)) < MIN_DISTINCT:
        return f"it has fewer than {MIN_DISTINCT} distinct characters"
    return None


def _is_fernet_key(value: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(value.encode())) == 32
    except (binascii.Error, ValueError):
        return False


def secrets_check(
    *,
    secret_key: str,
    encryption_keys: str,
    embedded_key: str,
    production: bool,
    debug: bool,
) -> None:
    """Raise ImproperlyConfigured, saying what to set and how to make it, when a secret is
    missing or weak for the mode Parley starts in."""
    if not production:
        if debug or secret_key == embedded_key:
            return
        weakness = secret_weakness(secret_key)
        if weakness:
            raise ImproperlyConfigured(
                f"DJANGO_SECRET_KEY is too weak ({weakness}) to run with DEBUG off. "
                f"Generate one with: {GENERATE_SECRET}"
            )
        return
    if secret_key == embedded_key:
        raise ImproperlyConfigured(
            "Set DJANGO_SECRET_KEY: production settings refuse the embedded key. "
            f"Generate one with: {GENERATE_SECRET}"
        )
    weakness = secret_weakness(secret_key)
    if weakness:
        raise ImproperlyConfigured(
            f"DJANGO_SECRET_KEY is too weak for production ({weakness}). "
            f"Generate one with: {GENERATE_SECRET}"
        )
    keys = [k.strip() for k in encryption_keys.split(",") if k.strip()]
    if not keys:
        raise ImproperlyConfigured(
            "Set PARLEY_ENCRYPTION_KEY: in production the key that encrypts stored provider API "
            "keys is not derived from DJANGO_SECRET_KEY. "
            f"Generate one with: {GENERATE_FERNET}"
        )
    for index, key in enumerate(keys, start=1):
        if key == secret_key:
            raise ImproperlyConfigured(
                f"PARLEY_ENCRYPTION_KEY (key {index}) must not be DJANGO_SECRET_KEY: "
                "one leaked secret would open both."
            )
        if not _is_fernet_key(key) and (weakness := secret_weakness(key)):
            raise ImproperlyConfigured(
                f"PARLEY_ENCRYPTION_KEY (key {index}) is too weak for production ({weakness}). "
                f"Generate one with: {GENERATE_FERNET}"
            )
