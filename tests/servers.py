"""Where chat's and llm's tests (and the browser test) found the process helpers before they
joined the harness (tests/harness/): these names stay importable until those tests import
tests.harness themselves."""

from tests.harness.processes import (
    PYTHON,
    REPO,
    ProcessGroup,
    base_env,
    free_port,
    manage,
    require_binary,
    start_redis_server,
)
from tests.harness.services import REDIS_HOST, REDIS_PORT, redis_database, require_service

__all__ = [
    "PYTHON",
    "REDIS_HOST",
    "REDIS_PORT",
    "REPO",
    "ProcessGroup",
    "base_env",
    "free_port",
    "manage",
    "redis_database",
    "require_binary",
    "require_service",
    "start_redis_server",
]
