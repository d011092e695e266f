from __future__ import annotations

import pytest
from django.core.management import call_command
from django.urls import reverse

from accounts.models import User

pytestmark = pytest.mark.django_db


def test_signup_creates_an_account_and_signs_in(client):
    response = client.post(
        reverse("accounts:signup"),
        {
            "username": "nadia",
            "email": "n@example.org",
            "password1": "a long passphrase 42",
            "password2": "a long passphrase 42",
        },
    )
    assert response.status_code == 302 and response["Location"] == reverse("chat:home")
    assert User.objects.filter(username="nadia").exists()
    assert client.get(reverse("chat:home")).status_code == 200


def test_signup_with_mismatched_passwords_shows_the_error_and_creates_nothing(client):
    response = client.post(
        reverse("accounts:signup"),
        {"username": "nadia", "password1": "a long passphrase 42", "password2": "other"},
    )
    assert response.status_code == 200
    assert b"didn" in response.content  # "The two password fields didn't match."
    assert not User.objects.filter(username="nadia").exists()


def test_sign_in_and_sign_out(client, owner):
    response = client.post(
        reverse("accounts:login"), {"username": "olivia", "password": "correct horse battery"}
    )
    assert response.status_code == 302
    assert client.get(reverse("chat:home")).status_code == 200
    client.post(reverse("accounts:logout"))
    assert client.get(reverse("chat:home")).status_code == 302


def test_wrong_password_is_refused(client, owner):
    response = client.post(reverse("accounts:login"), {"username": "olivia", "password": "nope"})
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_sign_in_is_rate_limited_with_429_and_retry_after(client, owner):
    url = reverse("accounts:login")
    # 45 tries span at most two fixed one-minute windows, so one of them exceeds 20/m.
    responses = [client.post(url, {"username": "olivia", "password": "nope"}) for _ in range(45)]
    assert responses[0].status_code == 200
    limited = [r for r in responses if r.status_code == 429]
    assert limited and all(1 <= int(r["Retry-After"]) <= 60 for r in limited)
    assert not any(r.status_code == 403 for r in responses)


def test_ensure_admin_creates_one_admin_once(capsys, monkeypatch):
    monkeypatch.setenv("PARLEY_ADMIN_PASSWORD", "s3cret-pass-phrase")
    call_command("ensure_admin")
    assert "password: s3cret-pass-phrase" in capsys.readouterr().out
    call_command("ensure_admin")
    assert "exists already" in capsys.readouterr().out
    assert User.objects.filter(is_superuser=True).count() == 1
