"""A real Parley on loopback for API tests: Daphne in embedded mode (SQLite temp file,
in-memory channel layer, in-process generation) with the simulated provider, and an API key
made with manage.py, as an operator would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.harness.processes import ProcessGroup, base_env, free_port, manage

MAKE_KEY = """
from accounts.services import account_create, api_key_create
user = account_create(username="program", password=None)
print(api_key_create(user=user, organisation=user.personal_organisation, name="sdk").raw)
"""


@dataclass(frozen=True)
class RunningParley:
    url: str  # http://127.0.0.1:PORT
    key: str  # a raw API key (pk_…)
    env: dict[str, str]
    group: ProcessGroup

    def log(self) -> str:
        return self.group.log("daphne")


@contextmanager
def running_parley(workdir: Path, **env: str) -> Iterator[RunningParley]:
    defaults = {
        "SQLITE_PATH": str(workdir / "parley.sqlite3"),
        "LLM_DEFAULT_PROVIDER": "simulated",
        "SIMULATED_FIRST_TOKEN_DELAY": "0.05",
        "SIMULATED_TOKENS_PER_SECOND": "400",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "WS_RATE_SENDS_PER_USER": "10000/m",
        "WS_RATE_SENDS_PER_ORG": "10000/m",
    }
    environment = base_env(**{**defaults, **env})
    manage("migrate", "--noinput", env=environment)
    key = manage("shell", "-c", MAKE_KEY, env=environment).strip().splitlines()[-1]
    assert key.startswith("pk_"), key
    group = ProcessGroup(log_dir=workdir)
    port = free_port()
    try:
        group.daphne("daphne", port, environment)
        yield RunningParley(f"http://127.0.0.1:{port}", key, environment, group)
    finally:
        group.stop_all()
