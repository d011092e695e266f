"""A caller's generation choices for one reply (max tokens, sampling, stop words, structured
output), as plain data: validated at the edge, stored on the reply, handed to the provider build.

Each provider kind honours what it can and names what it cannot (`option_unsupported`), so a
request is either carried out as asked or refused before anything starts; nothing is silently
dropped. Unset fields (None) leave the deployment's own settings in force.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# What each provider kind can honour, besides `max_tokens` (every kind) and `user` (an end-user
# id for the provider's abuse monitoring: sent to OpenAI-style servers; it never changes the
# text, so kinds without such a field take it as Parley's own record only).
_SAMPLING = frozenset(
    {"temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty"}
)
SUPPORTED: dict[str, frozenset[str]] = {
    "openai": _SAMPLING | {"response_format"},
    "openai-compatible": _SAMPLING | {"response_format"},
    # llama.cpp constrains the output with a grammar built from the schema (llm/providers/local.py).
    "local": _SAMPLING | {"response_format"},
    "anthropic": frozenset({"temperature", "top_p", "stop"}),
    # The simulated model is deterministic: sampling choices cannot change its text, so they
    # are taken as honoured; it stops at `stop` words and at max_tokens like a real model.
    "simulated": _SAMPLING,
}


@dataclass(frozen=True)
class GenerationOptions:
    """How one reply is to be generated; None means the deployment's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    response_format: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """The fields that are set, JSON-ready (stored on the reply's routing record)."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if "stop" in out:
            out["stop"] = list(out["stop"])
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> GenerationOptions:
        if not data:
            return cls()
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("stop") is not None:
            values["stop"] = tuple(values["stop"])
        return cls(**values)

    @property
    def shapes_text(self) -> bool:
        """Whether anything set here may change the text (a cached answer cannot stand in)."""
        return any(v is not None for k, v in asdict(self).items() if k != "user")

    def set_params(self) -> list[str]:
        return [k for k, v in asdict(self).items() if v is not None]


def option_unsupported(options: GenerationOptions, kind: str) -> str | None:
    """The first option set here that a provider of `kind` cannot honour, else None."""
    supported = SUPPORTED.get(kind, frozenset()) | {"max_tokens", "user"}
    for param in options.set_params():
        if param not in supported:
            return param
    return None


def sampling_kwargs(options: GenerationOptions | None) -> dict[str, Any]:
    """The sampling choices that are set, by their OpenAI names."""
    if options is None:
        return {}
    out: dict[str, Any] = {}
    for name in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(options, name)
        if value is not None:
            out[name] = value
    if options.stop is not None:
        out["stop"] = list(options.stop)
    return out
