"""Create a first superuser when none exists and say how to sign in."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.core.management.base import BaseCommand

from accounts.models import User
from accounts.services import account_create


class Command(BaseCommand):
    help = "Create the first admin account if there is none; print how to sign in."

    def handle(self, *args: Any, **options: Any) -> None:
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("An admin account exists already; sign in at /admin/.")
            return
        username = os.environ.get("PARLEY_ADMIN_USERNAME", "admin")
        password = os.environ.get("PARLEY_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        account_create(username=username, password=password, is_superuser=True)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created admin account\n  username: {username}\n  password: {password}\n"
                "Sign in on the chat page, or at /admin/ as an operator."
            )
        )
