# Parley: `make run` starts the product, `make test` runs every test. Both set up what they need.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck check worker system-deps clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required (looked for $(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel

# llama.cpp is compiled for a portable x86-64 (AVX2), as the Dockerfile does, not for the build
# machine's CPU: built with -march=native on a Xeon with AMX, the bundled model's first reply
# killed the process (SIGSEGV in llama_decode). The wheel is kept per set of flags, outside pip's
# cache (which keys a build by its source only and would hand back a native one).
LLAMA_VERSION := $(shell sed -n 's/^llama-cpp-python\[[a-z]*\]==//p' requirements.txt)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_WHEELS ?= $(HOME)/.cache/parley/llama-wheels/$(shell echo '$(LLAMA_CMAKE_ARGS)' | md5sum | cut -c1-12)

# Reinstall only when the requirement files change. The first install compiles llama.cpp.
$(STAMP): requirements.txt requirements-dev.txt | $(BIN)/python
	@echo "Installing dependencies (the first time compiles llama.cpp: about 7 minutes on 2 cores)..."
	@ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(BIN)/pip wheel --quiet --no-deps --no-cache-dir -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install --quiet --find-links $(LLAMA_WHEELS) \
	  --force-reinstall --no-deps $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install --quiet --find-links $(LLAMA_WHEELS) -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py ensure_admin
	$(BIN)/python manage.py reap_replies --all
	@echo "Parley is starting on http://$(HOST):$(PORT)/  (Ctrl+C stops it)"
	PYTHONMALLOC=malloc $(BIN)/daphne -b $(HOST) -p $(PORT) project.asgi:application

# Production mode's Celery side (needs CELERY_BROKER_URL and REDIS_URL), as compose.yaml runs
# it: remote providers in 64 threads (I/O-bound), the local model one reply at a time
# (CPU-bound, prefork), and beat, which schedules the reaper. Ctrl+C stops all three.
worker: $(STAMP)
	trap 'kill $$(jobs -p) 2>/dev/null' EXIT; \
	$(BIN)/celery -A project worker -Q llm-local --pool=prefork --concurrency=1 \
	  --prefetch-multiplier=1 --without-gossip --without-mingle -n local@%h --loglevel=INFO & \
	$(BIN)/celery -A project beat --schedule=$${TMPDIR:-/tmp}/parley-celerybeat-schedule \
	  --loglevel=INFO & \
	$(BIN)/celery -A project worker -Q llm-remote --pool=threads --concurrency=64 \
	  --prefetch-multiplier=1 --without-gossip --without-mingle -n remote@%h --loglevel=INFO

# Debian packages the integration tests drive: nginx (the real proxy config) and Chromium;
# Debian's prometheus package brings promtool, which checks deploy/prometheus/alerts.yaml.
system-deps:
	@missing=""; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "Please install:$$missing (apt-get install$$missing)"; fi; \
	fi

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo
	$(BIN)/mypy .
	$(MAKE) --no-print-directory jstest
	$(BIN)/pytest

# The page's scripts (static/chat/*.js, ES modules) under Node's built-in test runner.
.PHONY: jstest
jstest:
	@command -v node >/dev/null 2>&1 || { \
	  echo "make jstest: Node.js 20+ runs the page's script tests: apt-get install nodejs"; exit 1; }
	node --test static/chat/tests/

# ruff, then the architecture contracts of pyproject.toml (import-linter).
lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports --no-logo

typecheck: $(STAMP)
	$(BIN)/mypy .

clean:
	rm -rf $(VENV) staticfiles db.sqlite3*
