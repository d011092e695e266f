"""Start-up refuses weak secrets in production, and `check --deploy` is clean with the
production settings .env.example documents: `manage.py` run as a real process, as an operator
would start it."""

from __future__ import annotations

import base64
import secrets
import subprocess
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from project.security import secret_weakness, secrets_check
from tests.harness.processes import PYTHON, REPO, base_env

STRONG = secrets.token_urlsafe(50)
FERNET = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
EMBEDDED = "parley-embedded-mode-insecure-key-change-me"


def env_example() -> dict[str, str]:
    """The variables .env.example sets (commented lines are not set)."""
    values = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def manage_check(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = base_env(**env)
    for name in ("DJANGO_SECRET_KEY", "PARLEY_ENCRYPTION_KEY"):
        if name not in env:
            environment.pop(name)  # as an operator who did not set it
    return subprocess.run(
        [PYTHON, str(Path(REPO) / "manage.py"), "check", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_refuses_the_example_secret_key_with_a_clear_message():
    production = {**env_example(), "PARLEY_ENCRYPTION_KEY": FERNET}
    assert production["DJANGO_SECRET_KEY"] == "change-me"  # what the example ships
    result = manage_check(**production)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is too weak for production (it is an example value)" in result.stderr
    assert "secrets.token_urlsafe(50)" in result.stderr  # and says how to make a good one


@pytest.mark.parametrize(
    ("service", "url"),
    [
        ("DATABASE_URL", "postgresql://parley:pw@127.0.0.1:5432/parley"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0"),
        ("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1"),
    ],
)
def test_any_production_service_makes_start_up_refuse_a_short_key(service, url):
    result = manage_check(
        **{service: url, "DJANGO_SECRET_KEY": "s3cr3t-but-short", "GENERATION_BACKEND": "inprocess"}
    )
    assert result.returncode != 0
    assert "shorter than 50 characters" in result.stderr


def test_production_needs_an_encryption_key_of_its_own():
    result = manage_check(REDIS_URL="redis://127.0.0.1:6379/0", DJANGO_SECRET_KEY=STRONG)
    assert result.returncode != 0
    assert "Set PARLEY_ENCRYPTION_KEY" in result.stderr
    assert "not derived from DJANGO_SECRET_KEY" in result.stderr


def test_a_key_set_with_debug_off_must_be_strong_even_without_services():
    result = manage_check(DJANGO_SECRET_KEY="change-me", DJANGO_DEBUG="false")
    assert result.returncode != 0 and "to run with DEBUG off" in result.stderr


def test_embedded_mode_still_starts_with_its_built_in_key():
    result = manage_check()
    assert result.returncode == 0, result.stderr


def test_check_deploy_is_clean_with_the_documented_production_settings():
    production = {
        **env_example(),
        "DJANGO_SECRET_KEY": STRONG,
        "PARLEY_ENCRYPTION_KEY": FERNET,
        "DATABASE_URL": "postgresql://parley:pw@postgres:5432/parley",  # compose sets it
    }
    result = manage_check("--deploy", "--fail-level", "WARNING", **production)
    assert result.returncode == 0, result.stderr
    # The one silenced check is HSTS preload, documented in .env.example as the owner's call.
    assert "System check identified no issues (1 silenced)." in result.stdout


def test_check_deploy_warns_without_tls_settings():
    production = {
        **env_example(),
        "DJANGO_SECRET_KEY": STRONG,
        "PARLEY_ENCRYPTION_KEY": FERNET,
        "BEHIND_TLS_PROXY": "false",
    }
    result = manage_check("--deploy", "--fail-level", "WARNING", **production)
    assert result.returncode != 0
    assert "security.W004" in result.stderr and "security.W008" in result.stderr


@pytest.mark.parametrize(
    "weak",
    ["change-me", "x" * 60, "django-insecure-" + STRONG, STRONG[:49], EMBEDDED],
)
def test_weak_secrets_are_named_as_such(weak):
    assert secret_weakness(weak) is not None
    with pytest.raises(ImproperlyConfigured):
        secrets_check(
            secret_key=weak,
            encryption_keys=FERNET,
            embedded_key=EMBEDDED,
            production=True,
            debug=False,
        )


def test_the_encryption_key_may_not_be_the_secret_key_or_weak():
    for keys in (STRONG, f"{FERNET},change-me"):
        with pytest.raises(ImproperlyConfigured, match="PARLEY_ENCRYPTION_KEY"):
            secrets_check(
                secret_key=STRONG,
                encryption_keys=keys,
                embedded_key=EMBEDDED,
                production=True,
                debug=False,
            )
    secrets_check(
        secret_key=STRONG,
        encryption_keys=f"{FERNET}, {secrets.token_urlsafe(50)}",
        embedded_key=EMBEDDED,
        production=True,
        debug=False,
    )
