"""Where chat's tests found the embedded server before it joined the harness (tests/harness/):
these names stay importable until those tests import tests.harness.embedded themselves."""

from tests.harness.embedded import RunningParley, running_parley

__all__ = ["RunningParley", "running_parley"]
