"""manage.py cache_warm --org ORG --file faq.yaml: put FAQ answers in an organisation's cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Organisation
from llm.cache.keys import Params
from llm.cache.policy import params_for
from llm.cache.warm import FAQ_TTL, FaqFileError, cache_warm, faq_read
from llm.catalog import default_alias


def organisation_find(value: str) -> Organisation:
    """An organisation by id or slug."""
    found = Organisation.objects.filter(slug=value).first()
    if found is None and value.isdigit():
        found = Organisation.objects.filter(pk=int(value)).first()
    if found is None:
        raise CommandError(f"No organisation with id or slug {value!r}.")
    return found


class Command(BaseCommand):
    help = "Store FAQ answers (YAML or JSON) in an organisation's reply cache."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="organisation id or slug")
        parser.add_argument("--file", required=True, type=Path, help="faq.yaml or faq.json")
        parser.add_argument("--alias", default="", help="model alias (default: the default)")
        parser.add_argument("--ttl", type=int, default=FAQ_TTL, help="seconds to keep them")

    def handle(self, *args: Any, **options: Any) -> None:
        organisation = organisation_find(options["org"])
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        try:
            items = faq_read(path)
        except FaqFileError as exc:
            raise CommandError(str(exc)) from None
        alias = options["alias"] or default_alias()
        count = cache_warm(organisation=organisation, items=items, alias=alias, ttl=options["ttl"])
        self.stdout.write(
            f"Stored {count} questions ({len(items)} answers) for {organisation.slug} "
            f"under model alias {alias!r}, for {options['ttl']} s."
        )
        self._warn_if_unreachable(params_for(alias))

    def _warn_if_unreachable(self, params: Params) -> None:
        if not params.deployments:
            self.stderr.write("Note: no enabled deployment serves this alias yet.")
