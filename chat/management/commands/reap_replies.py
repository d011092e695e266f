"""Fail replies left pending or streaming by a generator that died."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from chat.replies.reaper import replies_reap


class Command(BaseCommand):
    help = "Mark replies whose generator died as failed (retryable), keeping their partial text."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--all",
            action="store_true",
            help="Reap every unfinished reply (embedded mode at start-up: none can be running).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["all"]:
            stale = pending = timedelta(0)
        else:
            stale = timedelta(seconds=settings.REAP_STALE_AFTER)
            pending = timedelta(seconds=settings.REAP_PENDING_AFTER)
        reaped = replies_reap(stale_after=stale, pending_after=pending)
        self.stdout.write(f"Reaped {reaped} unfinished repl{'y' if reaped == 1 else 'ies'}.")
