"""Stand-ins for prometheus-client's metric classes when PARLEY_METRICS=off: every call is
accepted and nothing is counted. The baseline of bench/metrics_overhead.py, and a way out for an
operator who wants no counting at all."""

from __future__ import annotations

from typing import Any


class NoopMetric:
    def __init__(self, name: str, documentation: str = "", *args: Any, **kwargs: Any) -> None:
        self._name = name

    def labels(self, *args: Any, **kwargs: Any) -> NoopMetric:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def describe(self) -> list[Any]:
        return []
