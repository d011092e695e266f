"""The UsageCounter rows a reservation and a settlement charge, locked in primary-key order."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Q

from accounts.models import Period, UsageCounter, UsageLedger
from accounts.quotas.budgets import _today, period_start


def _counter_filter(*, organisation_id: int, user_id: int | None, day: date) -> Q:
    scopes = (
        Q(user_id=user_id) | Q(user__isnull=True) if user_id is not None else Q(user__isnull=True)
    )
    periods = Q(period=Period.DAY, start=day) | Q(
        period=Period.MONTH, start=period_start(Period.MONTH, day)
    )
    return Q(organisation_id=organisation_id) & scopes & periods


def _counters_create(*, organisation_id: int, user_id: int | None, day: date) -> None:
    """The (user, organisation) × (day, month) counters of `day` that are missing."""
    UsageCounter.objects.bulk_create(
        [
            UsageCounter(
                organisation_id=organisation_id,
                user_id=who,
                period=period,
                start=period_start(period, day),
            )
            # Always in this order, so concurrent first inserts cannot deadlock.
            for who in ([user_id, None] if user_id is not None else [None])
            for period in (Period.DAY, Period.MONTH)
        ],
        ignore_conflicts=True,
    )


def _counters_charge_sql(*, excluding: int) -> str:
    """One statement that locks a reply's counters (in primary-key order, so two charges never
    deadlock), adds to them and returns what they hold now."""
    table = UsageCounter._meta.db_table
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    skip = f" AND id NOT IN ({', '.join(['%s'] * excluding)})" if excluding else ""
    return (
        f"UPDATE {table} SET tokens = tokens + %s, cost = cost + %s, requests = requests + %s "  # noqa: S608
        f"WHERE id IN (SELECT id FROM {table} WHERE organisation_id = %s "
        "AND (user_id = %s OR user_id IS NULL) "
        f"AND ((period = %s AND start = %s) OR (period = %s AND start = %s)){skip} "
        f"ORDER BY id{lock}) RETURNING id, user_id, period, tokens, cost"
    )


_COST_PLACES = Decimal(1).scaleb(-UsageCounter._meta.get_field("cost").decimal_places)  # type: ignore[arg-type]


def _as_decimal(value: object) -> Decimal:
    # PostgreSQL returns numeric as Decimal; SQLite (no decimal type) an int or a float.
    return value if isinstance(value, Decimal) else Decimal(str(value)).quantize(_COST_PLACES)


def _counters_charge(
    *,
    organisation_id: int,
    user_id: int | None,
    day: date,
    tokens: int,
    cost: Decimal,
    requests: int,
) -> dict[tuple[int | None, str], tuple[int, Decimal]]:
    """Add `tokens`, `cost` and `requests` to the (user, organisation) × (day, month) counters
    of `day` (created if missing): their (tokens, cost) after the charge, by (user, period).
    One statement when the counters exist (every reservation but a day's first, every
    settlement)."""
    wanted = 4 if user_id is not None else 2
    where = [
        organisation_id,
        user_id,
        Period.DAY,
        period_start(Period.DAY, day),
        Period.MONTH,
        period_start(Period.MONTH, day),
    ]
    charged: dict[tuple[int | None, str], tuple[int, Decimal]] = {}
    seen: list[int] = []
    with connection.cursor() as cursor:
        for attempt in range(2):
            cursor.execute(
                _counters_charge_sql(excluding=len(seen)), [tokens, cost, requests, *where, *seen]
            )
            for pk, who, period, total, spent in cursor.fetchall():
                seen.append(pk)
                charged[(who, period)] = (int(total), _as_decimal(spent))
            if len(charged) == wanted or attempt:
                break
            _counters_create(organisation_id=organisation_id, user_id=user_id, day=day)
    return charged


def counters_create(*, user_id: int, organisation_id: int, now: datetime) -> None:
    """The counters of `now`'s day and month that a statement reservation found missing."""
    _counters_create(organisation_id=organisation_id, user_id=user_id, day=_today(now))


_CounterKey = tuple[int, int | None, str, date]  # organisation, user (None: all), period, start


def _changes_add(
    changes: dict[_CounterKey, list[Any]],
    entry: UsageLedger,
    tokens: int,
    cost: Decimal,
    requests: int,
) -> None:
    """Add one reply's difference to each of its counters' sums: its user's and its
    organisation's, for the day and the month it was reserved in."""
    day = _today(entry.created_at)
    whom = [entry.user_id, None] if entry.user_id is not None else [None]
    for who in whom:
        for period in (Period.DAY.value, Period.MONTH.value):
            # Plain strings in the key: a Choices member hashes by its name, not its value.
            key = (entry.organisation_id, who, period, period_start(period, day))
            change = changes.setdefault(key, [0, Decimal(0), 0])
            change[0] += tokens
            change[1] += cost
            change[2] += requests


def _counters_charge_many(changes: dict[_CounterKey, list[Any]]) -> None:
    """Add each counter's sum to it, all the counters locked in primary-key order in one
    statement on PostgreSQL (each on its own elsewhere); a counter missing (settled on a day
    whose counters are gone, which a reservation creates) is created first."""
    pending = {key: change for key, change in changes.items() if any(change)}
    for attempt in range(2):
        if not pending:
            return
        found = _counters_add(pending)
        missing = {key: change for key, change in pending.items() if key not in found}
        if missing and not attempt:
            UsageCounter.objects.bulk_create(
                [
                    UsageCounter(organisation_id=o, user_id=u, period=p, start=start)
                    # Always in one order, so concurrent first inserts cannot deadlock.
                    for o, u, p, start in sorted(missing, key=_creation_order)
                ],
                ignore_conflicts=True,
            )
        pending = missing


def _creation_order(key: _CounterKey) -> tuple[int, bool, int, str, date]:
    organisation_id, user_id, period, start = key
    return organisation_id, user_id is None, user_id or 0, period, start


def _counters_add(changes: dict[_CounterKey, list[Any]]) -> set[_CounterKey]:
    """Add to the counters there are; the keys of those found."""
    table = connection.ops.quote_name(UsageCounter._meta.db_table)
    keys = list(changes)
    found: set[_CounterKey] = set()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            sql = (
                "WITH d AS (SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[], "  # noqa: S608
                "%s::date[], %s::bigint[], %s::numeric[], %s::integer[]) "
                "AS d(organisation_id, user_id, period, start, tokens, cost, requests)), "
                f"locked AS (SELECT c.id, d.tokens, d.cost, d.requests FROM {table} c JOIN d "
                "ON c.organisation_id = d.organisation_id AND c.period = d.period "
                "AND c.start = d.start AND (c.user_id = d.user_id "
                "OR (c.user_id IS NULL AND d.user_id IS NULL)) ORDER BY c.id FOR UPDATE OF c) "
                f"UPDATE {table} SET tokens = {table}.tokens + l.tokens, "
                f"cost = {table}.cost + l.cost, requests = {table}.requests + l.requests "
                f"FROM locked l WHERE {table}.id = l.id "
                f"RETURNING {table}.organisation_id, {table}.user_id, {table}.period, "
                f"{table}.start"
            )
            columns = list(zip(*keys, strict=True)) + list(zip(*changes.values(), strict=True))
            cursor.execute(sql, [list(column) for column in columns])
            found.update((o, u, p, s) for o, u, p, s in cursor.fetchall())
            return found
        sql = (
            f"UPDATE {table} SET tokens = tokens + %s, cost = cost + %s, "  # noqa: S608
            "requests = requests + %s WHERE organisation_id = %s AND user_id IS %s "
            "AND period = %s AND start = %s"
        )
        for key in keys:
            tokens, cost, requests = changes[key]
            organisation_id, user_id, period, start = key
            cursor.execute(sql, [tokens, cost, requests, organisation_id, user_id, period, start])
            if cursor.rowcount:
                found.add(key)
    return found
