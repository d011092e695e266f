"""The reply cache: exact and semantic, per organisation (docs/caching.md).

- `keys`: what a request is keyed on (normalised model, prompt, history, parameters; tenant).
- `exact`: the exact layer in the default cache (Redis in production).
- `semantic`: nearest stored question per tenant and scope (vectors in the database, NumPy).
- `text`: normalisation, and the lexical check every semantic match must pass.
- `entries`: store, LRU eviction, purges, hit and savings records.
- `policy`: per-organisation settings over the CACHE_* defaults.
- `service`: lookup, replay and settle in plain data, called from chat/replies/cache.py.
- `warm`: FAQ entries from a YAML or JSON file (manage.py cache_warm).
"""

from __future__ import annotations

from llm.cache.entries import entries_purge
from llm.cache.service import (
    Answer,
    Lookup,
    cache_replay,
    cache_settle,
    lookup_similar,
    lookup_start,
    lookup_stored,
)

__all__ = [
    "Answer",
    "Lookup",
    "cache_replay",
    "cache_settle",
    "entries_purge",
    "lookup_similar",
    "lookup_start",
    "lookup_stored",
]
