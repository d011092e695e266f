"""A new row written by one hand-written INSERT: what `Model.save()` sends for a fresh instance,
without the ORM building that statement each time.

On a send's hot path the ORM's INSERT cost more CPU than the database spends running it: the
compiler, every field's value prepared through several layers, the statement assembled afresh
(a profile of `message_send` put its three ORM INSERTs at over half of its CPU;
docs/benchmarks.md "A send's rows written by hand, and what the collector walks"). The
statement is made once per model; each value is still prepared by its own field, as `save()`
prepares it (defaults, `auto_now_add`, JSON, decimals, foreign keys), so the row is the same.

What it leaves out is what those hot paths do not use: model signals (`pre_save`/`post_save`;
a model given a receiver must not be written here), the check for unsaved related objects,
multi-table inheritance and `db_default` expressions.
"""

from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper

_statements: dict[tuple[type[models.Model], str], tuple[str, list[models.Field[Any, Any]]]] = {}


def _statement(
    model: type[models.Model], connection: BaseDatabaseWrapper
) -> tuple[str, list[models.Field[Any, Any]]]:
    """The INSERT of `model`'s concrete fields but its auto-incremented key (returned), and
    those fields in the order of its placeholders."""
    key = (model, connection.vendor)
    found = _statements.get(key)
    if found is not None:
        return found
    meta, quote = model._meta, connection.ops.quote_name
    assert not meta.parents and meta.auto_field is not None, "a plain model with an auto key"
    fields: list[models.Field[Any, Any]] = [
        f for f in meta.local_concrete_fields if f is not meta.auto_field
    ]
    columns = ", ".join(quote(f.column) for f in fields)
    values = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({values})"  # noqa: S608
    if connection.features.can_return_columns_from_insert:
        sql += f" RETURNING {quote(meta.auto_field.column)}"
    _statements[key] = found = (sql, fields)
    return found


def row_insert(instance: models.Model) -> None:
    """Save a new `instance` (its key not set) in one INSERT, as `save(force_insert=True)`
    would, and give it its key. Database errors (an IntegrityError on a unique key) are
    Django's, as from `save()`."""
    model = type(instance)
    # The connection itself, not django.db.connection: that proxy looks it up at every use.
    connection = connections[DEFAULT_DB_ALIAS]
    sql, fields = _statement(model, connection)
    assert instance.pk is None, "a new row"
    values = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        if connection.features.can_return_columns_from_insert:
            pk = cursor.fetchone()[0]
        else:
            pk = connection.ops.last_insert_id(cursor, model._meta.db_table, model._meta.pk.column)
    instance.pk = pk
    instance._state.adding = False
    instance._state.db = connection.alias
