"""What the reply watch's checkpoint round costs PostgreSQL and the worker, per reply saved.

    DATABASE_URL=postgresql://…/db .venv/bin/python bench/checkpoint_cost.py --replies 250

Needs a migrated PostgreSQL database (DATABASE_URL; its rows are deleted after). Saves `replies`
streaming replies, then runs `rounds` checkpoint rounds of all of them, their text growing by a
delta's worth each round, as the watch does once a second while they stream, three ways in
turn, twice: `executemany` (a statement per reply, the way before 5 December), `unnest-heartbeat`
(one UPDATE over arrays that also refreshes heartbeat_at, which an index covers: the way until
session 10) and `unnest` (the same without the heartbeat, chat/replies/lifecycle.py now: the
watch's heartbeat round refreshes it). It reports the server backend's CPU
(/proc/<pid>/stat of pg_backend_pid(): loopback only) and this process's, per reply saved.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replies", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.models import Organisation
    from chat.models import Conversation, Message
    from chat.replies import lifecycle, statements

    organisation = Organisation.objects.first() or Organisation.objects.create(name="bench")
    owner, _ = get_user_model().objects.get_or_create(username="checkpoint-bench")
    conversation = Conversation.objects.create(
        owner=owner, organisation=organisation, title="bench"
    )
    replies = Message.objects.bulk_create(
        Message(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            seq=0,
            heartbeat_at=timezone.now(),
        )
        for _ in range(args.replies)
    )
    ids = [reply.pk for reply in replies]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]

    def executemany(checkpoints: list[lifecycle.ReplyCheckpoint]) -> None:
        # The body of replies_checkpoint before one statement (its executemany branch).
        column = partial(statements.message_column, connection=connection)
        now = timezone.now()
        sql = (
            f"UPDATE chat_message SET {column('content')} = %s, {column('seq')} = %s, "
            f"{column('heartbeat_at')} = %s, first_token_at = COALESCE(first_token_at, %s) "
            "WHERE id = %s AND status = %s"
        )
        rows = [
            (c.content, c.seq, now, c.first_token_at, c.message_id, "streaming")
            for c in checkpoints
        ]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, rows)

    def unnest(checkpoints: list[lifecycle.ReplyCheckpoint]) -> None:
        lifecycle._checkpoint_in_one_statement(checkpoints, connection)

    def unnest_heartbeat(checkpoints: list[lifecycle.ReplyCheckpoint]) -> None:
        sql = (
            "UPDATE chat_message AS m SET content = v.content, seq = v.seq, heartbeat_at = %s, "
            "first_token_at = COALESCE(m.first_token_at, v.first) "
            "FROM unnest(%s::bigint[], %s::text[], %s::integer[], %s::timestamptz[]) "
            "AS v(id, content, seq, first) WHERE m.id = v.id AND m.status = %s"
        )
        with connection.cursor() as cursor:
            cursor.execute(
                sql,
                [
                    timezone.now(),
                    [c.message_id for c in checkpoints],
                    [c.content for c in checkpoints],
                    [c.seq for c in checkpoints],
                    [c.first_token_at for c in checkpoints],
                    "streaming",
                ],
            )

    ways = {
        "executemany": executemany,
        "unnest-heartbeat": unnest_heartbeat,
        "unnest": unnest,
    }
    first = timezone.now()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for _ in range(2):
        for name, way in ways.items():
            text = ""
            server, client = backend_cpu(pid), time.process_time()
            for _ in range(args.rounds):
                text += "lorem ipsum dolor sit "  # a delta's worth of text per round
                way([lifecycle.ReplyCheckpoint(i, text, len(text), first) for i in ids])
            saved = args.rounds * len(ids)
            results[name].append(
                (
                    (backend_cpu(pid) - server) / saved * 1e6,
                    (time.process_time() - client) / saved * 1e6,
                )
            )
    print(
        f"{args.replies} replies x {args.rounds} rounds, two passes; microseconds per reply saved"
    )
    print("| way | PostgreSQL backend | this process |")
    print("| --- | ---: | ---: |")
    for name, runs in results.items():
        server = " / ".join(f"{s:.1f}" for s, _ in runs)
        client = " / ".join(f"{c:.1f}" for _, c in runs)
        print(f"| {name} | {server} | {client} |")
    Message.objects.filter(pk__in=ids).delete()
    conversation.delete()


if __name__ == "__main__":
    main()
