"""Celery app for production mode: generation runs here and reaches sockets via Redis."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("parley")
app.config_from_object("django.conf:settings", namespace="CELERY")
# A reply's tasks live with the rest of its life, in chat/replies/tasks.py; a document's
# ingestion in chat/documents/tasks.py.
app.autodiscover_tasks(["chat.replies", "chat.documents"])
