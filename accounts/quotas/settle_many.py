"""Many replies' reservations settled in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from accounts.models import UsageLedger
from accounts.quotas.counters import _changes_add, _CounterKey, _counters_charge_many
from accounts.quotas.settle import (
    _OUTCOME_FIELDS,
    _SETTLED_FIELDS,
    ReplyOutcome,
    Settlement,
    _entry_settled,
    _ledger_field,
)

# --- many replies settled together ---------------------------------------------------------
#
# Replies that end together (500 of them within a second or two at the end of a load's
# streams) each settled in a transaction of their own: three statements and a commit each, and
# every reply of one organisation locking its counter rows in turn. Settled together, they
# are one transaction: their ledger rows locked in one statement (in primary-key order), written
# in one, and each counter charged once with the sum of its replies' differences, all the
# counters locked in primary-key order in one statement, as quota_reserve locks them, so no
# two of these, nor a reservation, can deadlock.


def quota_settle_many(*, settlements: Sequence[Settlement]) -> dict[int, UsageLedger]:
    """Settle many finished replies' reservations in one transaction, each as quota_settle
    settles it alone; the ledger rows settled, by message id (a reply whose reservation is
    settled already, or that has none, is left out: each is settled once)."""
    if not settlements:
        return {}
    by_message = {s.message_id: s for s in settlements}
    now = timezone.now()
    lazy = connection.vendor == "postgresql" and not connection.in_atomic_block
    settled: dict[int, UsageLedger] = {}
    changes: dict[_CounterKey, list[Any]] = {}
    # Inside a caller's transaction, a savepoint: a failure here leaves the caller's to go on.
    with transaction.atomic():
        for entry in _ledger_locked_many(list(by_message), lazy_commit=lazy):
            assert entry.message_id is not None
            settlement = by_message[entry.message_id]
            requests, _ = _entry_settled(
                entry,
                settlement.used(entry),
                settlement.charged(entry),
                now,
                settlement.outcome or ReplyOutcome(),
            )
            settled[entry.message_id] = entry
            tokens, spent = (
                entry.used_tokens - entry.reserved_tokens,
                entry.cost - entry.reserved_cost,
            )
            if tokens or spent or requests:
                _changes_add(changes, entry, tokens, spent, requests)
        _ledger_update_many(list(settled.values()), _SETTLED_FIELDS + _OUTCOME_FIELDS)
        _counters_charge_many(changes)
    return settled


def _ledger_locked_many(message_ids: list[int], *, lazy_commit: bool) -> list[UsageLedger]:
    """The `reserved` ledger rows of these replies, locked in primary-key order until the
    transaction ends (and, on PostgreSQL with `lazy_commit`, its commit not waiting for the
    disk, as _ledger_locked does)."""
    meta, quote = UsageLedger._meta, connection.ops.quote_name
    table = quote(meta.db_table)
    columns = ", ".join(f"{table}.{quote(f.column)}" for f in meta.concrete_fields)
    key, state = quote(_ledger_field("message").column), quote(_ledger_field("state").column)
    pk = quote(_ledger_field("id").column)
    params: list[Any]
    if connection.vendor == "postgresql":
        lazy = ", (SELECT set_config('synchronous_commit', 'off', true)) AS lazy"
        sql = (
            f"SELECT {columns} FROM {table}{lazy if lazy_commit else ''} "  # noqa: S608
            f"WHERE {key} = ANY(%s) AND {state} = %s ORDER BY {table}.{pk} FOR UPDATE OF {table}"
        )
        params = [message_ids, UsageLedger.State.RESERVED]
    else:  # SQLite: its write lock, taken at BEGIN, serialises instead
        among = ", ".join(["%s"] * len(message_ids))
        sql = (
            f"SELECT {columns} FROM {table} WHERE {key} IN ({among}) "  # noqa: S608
            f"AND {state} = %s ORDER BY {pk}"
        )
        params = [*message_ids, UsageLedger.State.RESERVED]
    return list(UsageLedger.objects.raw(sql, params))


def _ledger_update_many(entries: list[UsageLedger], names: list[str]) -> None:
    """Write `names` of many locked ledger rows: on PostgreSQL one UPDATE over arrays, each
    value prepared by its field; elsewhere _ledger_update's statement, run for each."""
    if not entries:
        return
    quote = connection.ops.quote_name
    fields = [_ledger_field(name) for name in names]
    table, pk = quote(UsageLedger._meta.db_table), quote(_ledger_field("id").column)
    rows = [
        [f.get_db_prep_save(getattr(entry, f.attname), connection) for f in fields] + [entry.pk]
        for entry in entries
    ]
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            assignments = ", ".join(f"{quote(f.column)} = %s" for f in fields)
            sql = f"UPDATE {table} SET {assignments} WHERE {pk} = %s"  # noqa: S608
            cursor.executemany(sql, rows)
            return
        types = [*(f.db_type(connection) for f in fields), "bigint"]
        arrays = ", ".join(f"%s::{_array_type(t)}[]" for t in types)
        names_v = [f"v{i}" for i in range(len(fields))]
        assignments = ", ".join(
            f"{quote(f.column)} = v.{n}" for f, n in zip(fields, names_v, strict=True)
        )
        sql = (
            f"UPDATE {table} SET {assignments} FROM unnest({arrays}) "  # noqa: S608
            f"AS v({', '.join(names_v)}, id) WHERE {table}.{pk} = v.id"
        )
        cursor.execute(sql, [list(column) for column in zip(*rows, strict=True)])


def _array_type(db_type: str | None) -> str:
    """A column's type as an array's element type (a varchar as text: its length is the
    column's to check)."""
    assert db_type is not None
    return "text" if db_type.startswith("varchar") else db_type
