# syntax=docker/dockerfile:1.7
# check=skip=SecretsUsedInArgOrEnv
# (the only "secret" ARG is a dummy key for collectstatic; real keys come from the environment)
#
# Parley images, one file:
#   docker build -t parley .                          the app: Daphne by default, also Celery
#   docker build --target nginx -t parley-nginx .     nginx with nginx.conf and the static files
# compose.yaml builds both. Stages:
#   builder   compilers + cmake: every requirement as a wheel (llama-cpp-python compiles here,
#             ~7 minutes on 2 cores)
#   app-base  python:3.11-slim + runtime libraries only; wheels installed from the builder
#             without copying them into a layer; code; collectstatic
#   nginx     nginx + nginx.conf + the collected static files from app-base
#   app       (default) app-base run as a non-root user, with a healthcheck

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NGINX_IMAGE=nginx:1.27-alpine

# --- builder -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# Debian's package versions are not pinned: the base image tag fixes the release, and point
# releases bring security fixes (hadolint DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*

# llama.cpp would otherwise compile for the build machine's CPU (-march=native) and die with
# SIGILL on another host. This targets any x86-64 CPU with AVX2/FMA (Haswell, 2013, and later);
# override for other hosts, e.g. --build-arg LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF" (baseline).
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
ENV CMAKE_ARGS=${LLAMA_CMAKE_ARGS} \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build
COPY requirements.txt .
RUN --mount=type=cache,target=/root/.cache/pip \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    pip wheel --wheel-dir /wheels -r requirements.txt

# --- app-base ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS app-base

# Runtime libraries only: llama.cpp needs OpenMP (libgomp1) and libstdc++; psycopg[binary]
# bundles libpq. tini is PID 1: it forwards signals and reaps children.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libstdc++6 tini \
 && rm -rf /var/lib/apt/lists/*

# PYTHONMALLOC=malloc: Python's objects from glibc's malloc, not its own arenas, so a Daphne
# replica hands back most of a closed socket's memory (core/memory.py trims after a storm of
# closes; with pymalloc's arenas ~75 % of it stays: docs/benchmarks.md "10,000 sockets").
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONMALLOC=malloc \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=project.settings \
    STATIC_ROOT=/app/staticfiles \
    SQLITE_PATH=/app/data/db.sqlite3

WORKDIR /app
COPY requirements.txt .
# The wheels are bind-mounted from the builder: installed, never stored in a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels -r requirements.txt

COPY . .

# Collected at build time into /app/staticfiles (nginx serves them; the nginx stage copies
# them). No database, Redis or broker is configured here, so the settings run in embedded mode
# with its built-in key: no secret is needed, and none is baked into a layer.
RUN python manage.py collectstatic --noinput

# --- nginx ---------------------------------------------------------------------------------
FROM ${NGINX_IMAGE} AS nginx
COPY nginx.conf /etc/nginx/nginx.conf
COPY --from=app-base /app/staticfiles /app/staticfiles
EXPOSE 80
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 \
    CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1/nginx-health"]

# --- app (default target) ------------------------------------------------------------------
FROM app-base AS app

# Code and static files stay root-owned (read-only to the app); only /app/data is writable,
# for the SQLite file of embedded mode (`docker run parley` with no DATABASE_URL).
RUN groupadd --system --gid 10001 parley \
 && useradd --system --uid 10001 --gid parley --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin parley \
 && mkdir -p /app/data \
 && chown parley:parley /app/data
USER 10001:10001

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/app/deploy/healthcheck.py"]

ENTRYPOINT ["/usr/bin/tini", "--"]
# --proxy-headers: the client address (rate limits) and scheme come from nginx's
# X-Forwarded-For / X-Forwarded-Proto; Daphne is reachable only through nginx.
# WebSocket lifetime and keepalive, chosen with nginx.conf and the page (static/chat/transport.js):
# --websocket_timeout 86400: a socket is closed after 24 h whatever it does; the page (and any
#   client following docs/protocol.md) reconnects and resumes by seq, so even a reply streaming
#   at that moment loses nothing. (A revoked key, a sign-out or a removed membership closes a
#   socket at once: accounts/revocation.py.)
# --websocket_connect_timeout 30: how long a handshake may wait for the application to accept it
#   (authentication: database queries). Daphne's default, 5 s, reset handshakes on a busy
#   machine (a burst of 200 sockets); nginx holds the client meanwhile, and only a complete
#   request header ever reaches Daphne, so a longer wait costs nothing.
# --websocket-max-message-size 1048576 (1 MiB, Daphne's default, stated): a larger message is
#   refused with close code 1009 (project/patches.py sends the close frame); smaller frames
#   past WS_MAX_FRAME_CHARS get a `bad_frame` error and the socket stays open.
# --ping-interval 20 / --ping-timeout 30: a socket with no frame from the client for 20 s gets a
#   WebSocket ping; no answer within 30 s closes it. The page pings every 25 s itself, so live
#   sockets carry traffic at least every ~25 s and nginx's 75 s proxy_read_timeout never fires
#   on them, only on a peer that vanished.
# tests/integration/test_faults.py runs Daphne with exactly this command line.
# The workers run the same image with other commands (compose.yaml: worker-remote,
# worker-local, beat).
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "--proxy-headers", "--websocket_timeout", "86400", "--websocket_connect_timeout", "30", "--websocket-max-message-size", "1048576", "--ping-interval", "20", "--ping-timeout", "30", "project.asgi:application"]
