"""Parley settings.

Defaults are the embedded mode (SQLite, in-memory channel layer, generation in-process, the
bundled local model), so a fresh clone runs as is. Production is this same file with environment
variables set: DATABASE_URL, REDIS_URL, CELERY_BROKER_URL and provider keys (see .env.example).
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from project.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)
_INSECURE_DEV_KEY = "parley-embedded-mode-insecure-key-change-me"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", _INSECURE_DEV_KEY)
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
    "csp",
    "accounts",
    "chat",
    "llm",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
            ],
        },
    },
]

# --- Database: SQLite by default, PostgreSQL (psycopg 3) from DATABASE_URL -----------------
_SQLITE_PATH = env_str("SQLITE_PATH", str(BASE_DIR / "db.sqlite3"))
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{_SQLITE_PATH}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Generation writes from another thread while pages read: WAL plus IMMEDIATE transactions
    # and a busy timeout keep SQLite from answering "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer and cache when REDIS_URL is set ------------------------------------
REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                # The layer is lossy by design; seq numbers catch drops. Capacity is per
                # process-wide channel, so it is sized for many streams per replica.
                "capacity": env_int("CHANNEL_LAYER_CAPACITY", 5000),
                "expiry": 60,
                "group_expiry": 86400,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "parley",
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

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

CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "llm-remote"
# Longer than the longest generation, so an unacked task is not redelivered while it still runs.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The reaper runs on a worker started with --beat (or a separate `celery beat`).
CELERY_BEAT_SCHEDULE = {
    "reap-stuck-replies": {
        "task": "llm.tasks.reap_replies",
        "schedule": env_float("REAP_EVERY", 10.0),
        "options": {"queue": "llm-remote", "expires": 30},
    }
}

# --- LLM providers -------------------------------------------------------------------------
LLM_DEFAULT_PROVIDER = env_str("LLM_DEFAULT_PROVIDER", "local")
LLM_MAX_TOKENS = env_int("LLM_MAX_TOKENS", 512)
LLM_TEMPERATURE = env_float("LLM_TEMPERATURE", 0.7)
LLM_HISTORY_MESSAGES = env_int("LLM_HISTORY_MESSAGES", 20)
LLM_SYSTEM_PROMPT = env_str("LLM_SYSTEM_PROMPT", "You are Parley, a helpful assistant. Be concise.")
LLM_REQUEST_TIMEOUT = env_float("LLM_REQUEST_TIMEOUT", 60.0)
LLM_LOCAL_THREADS = env_int("LLM_LOCAL_THREADS", 2)
LLM_LOCAL_CONTEXT = env_int("LLM_LOCAL_CONTEXT", 2048)
SIMULATED_TOKENS_PER_SECOND = env_float("SIMULATED_TOKENS_PER_SECOND", 40.0)
SIMULATED_FIRST_TOKEN_DELAY = env_float("SIMULATED_FIRST_TOKEN_DELAY", 0.2)
OPENAI_API_KEY = env_str("OPENAI_API_KEY", "")
OPENAI_MODEL = env_str("OPENAI_MODEL", "gpt-4o-mini")
OPENAI_COMPATIBLE_BASE_URL = env_str("OPENAI_COMPATIBLE_BASE_URL", "")
OPENAI_COMPATIBLE_API_KEY = env_str("OPENAI_COMPATIBLE_API_KEY", "not-needed")
OPENAI_COMPATIBLE_MODEL = env_str("OPENAI_COMPATIBLE_MODEL", "local-model")
ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY", "")
ANTHROPIC_MODEL = env_str("ANTHROPIC_MODEL", "claude-3-5-haiku-latest")

# --- Streaming -----------------------------------------------------------------------------
STREAM_FLUSH_INTERVAL = env_float("STREAM_FLUSH_INTERVAL", 0.04)
STREAM_FLUSH_MAX_CHARS = env_int("STREAM_FLUSH_MAX_CHARS", 1024)
STREAM_CHECKPOINT_INTERVAL = env_float("STREAM_CHECKPOINT_INTERVAL", 1.0)
STREAM_CANCEL_POLL_INTERVAL = env_float("STREAM_CANCEL_POLL_INTERVAL", 0.25)
# A generator refreshes its heartbeat this often; the reaper fails streaming replies whose
# heartbeat is older than REAP_STALE_AFTER, and pending ones never picked up after
# REAP_PENDING_AFTER (seconds).
STREAM_HEARTBEAT_INTERVAL = env_float("STREAM_HEARTBEAT_INTERVAL", 3.0)
REAP_STALE_AFTER = env_float("REAP_STALE_AFTER", 20.0)
REAP_PENDING_AFTER = env_float("REAP_PENDING_AFTER", 900.0)
REAP_EVERY = env_float("REAP_EVERY", 10.0)
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 16000)

# --- Static files --------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
# Embedded mode: Daphne serves /static/ itself. Behind nginx, nginx serves STATIC_ROOT.
SERVE_STATIC = env_bool("SERVE_STATIC", True)

# --- Security ------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
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

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}

if SECRET_KEY == _INSECURE_DEV_KEY and (REDIS_URL or env_str("DATABASE_URL", "")):
    raise ImproperlyConfigured("Set DJANGO_SECRET_KEY: production settings refuse the embedded key")
