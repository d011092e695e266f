from __future__ import annotations

from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """Parley's own user model, swappable from the first migration on."""
