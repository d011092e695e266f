"""A module of this repository as it is at another git revision, importable beside today's:
the baseline of an A/B run in one process (bench/limiter_bench.py, bench/follow_idle_bench.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def module_at(revision: str, path: str, name: str, workdir: Path) -> ModuleType:
    """The file `path` (from the repository's root) at `revision`, imported as `name`."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{path}"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    copy = workdir / f"{name}.py"
    copy.write_text(source)
    spec = importlib.util.spec_from_file_location(name, copy)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
