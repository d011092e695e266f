"""What a Daphne process loads before it serves (project/asgi.py), in a fresh interpreter: the
test process's own collector and modules are not a server's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_PROBE = """
import gc, sys
import project.asgi
frozen = gc.get_freeze_count()
tracked = {id(o) for o in gc.get_objects()}
urls = sys.modules.get("project.urls")
views = sys.modules.get("chat.api.views")
print("urls loaded", urls is not None and views is not None)
print("urls frozen", urls is not None and id(urls) not in tracked)
print("frozen", frozen > 0)
"""


def test_what_the_first_requests_load_is_frozen_out_of_the_collector(tmp_path):
    """The URLconf (every view, DRF, /v1/ and the SDKs they import) is loaded before the freeze,
    not at the first request: a full collection never walks it."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "SQLITE_PATH": str(tmp_path / "db.sqlite3"),  # embedded mode: nothing else to reach
    }
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert out.splitlines() == ["urls loaded True", "urls frozen True", "frozen True"]
