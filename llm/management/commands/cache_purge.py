"""manage.py cache_purge (--entry ID ... | --org ORG | --all) [--expired]: invalidate."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from llm.cache.entries import entries_purge
from llm.cache_models import CacheEntry
from llm.management.commands.cache_warm import organisation_find


class Command(BaseCommand):
    help = "Remove reply cache entries: some, one organisation's, or all."

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--entry", type=int, nargs="+", help="entry ids")
        which.add_argument("--org", help="organisation id or slug")
        which.add_argument("--all", action="store_true", help="every organisation's entries")
        parser.add_argument("--expired", action="store_true", help="only expired entries")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["entry"]:
            removed = entries_purge(
                entries=CacheEntry.objects.filter(pk__in=options["entry"]),
                expired_only=options["expired"],
            )
        elif options["org"]:
            organisation = organisation_find(options["org"])
            removed = entries_purge(
                organisation_id=organisation.pk, expired_only=options["expired"]
            )
        elif options["all"]:
            removed = entries_purge(everything=True, expired_only=options["expired"])
        else:  # pragma: no cover - argparse requires one
            raise CommandError("Say what to purge.")
        self.stdout.write(f"Removed {removed} cache entries.")
