"""What a cached reply is keyed on: the whole request, normalised, inside one tenant.

The exact key hashes everything that shapes the reply: the model alias and the deployments
serving it, the system prompt, every message of the history (role and normalised text), and
the generation parameters (temperatures, max tokens). The semantic scope hashes the same less
the last question, so a reworded question only ever meets answers given under the very same
model, prompt, parameters and earlier conversation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from llm.cache.lexical.rewrite import normalise

KEY_VERSION = 1


@dataclass(frozen=True)
class Params:
    """The generation parameters the key covers."""

    temperatures: tuple[float, ...]  # of every enabled deployment of the alias
    max_tokens: int
    deployments: tuple[str, ...]  # "name/model" of each, sorted

    @property
    def deterministic(self) -> bool:
        return bool(self.temperatures) and all(t == 0 for t in self.temperatures)

    def as_json(self) -> dict[str, Any]:
        return {
            "temperatures": list(self.temperatures),
            "max_tokens": self.max_tokens,
            "deployments": list(self.deployments),
        }


@dataclass(frozen=True)
class CacheRequest:
    """One reply's request as the cache sees it."""

    namespace: str
    organisation_id: int | None
    alias: str
    params: Params
    system: str
    history: tuple[tuple[str, str], ...]  # (role, text) before the question
    question: str
    key: str = field(init=False)
    scope: str = field(init=False)

    def __post_init__(self) -> None:
        scope = _digest(
            {
                "v": KEY_VERSION,
                "alias": self.alias,
                "params": self.params.as_json(),
                "system": normalise(self.system),
                "history": [[role, normalise(text)] for role, text in self.history],
            }
        )
        object.__setattr__(self, "scope", scope)
        object.__setattr__(self, "key", _digest({"scope": scope, "q": normalise(self.question)}))

    @property
    def first_turn(self) -> bool:
        return not self.history


def _digest(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def namespace_of(*, organisation_id: int | None, owner_id: int | None) -> str:
    """The tenant a conversation's cache lives in: its organisation, else its owner alone."""
    if organisation_id is not None:
        return f"org:{organisation_id}"
    return f"user:{owner_id}"


def request_from(
    messages: list[BaseMessage],
    *,
    namespace: str,
    organisation_id: int | None,
    alias: str,
    params: Params,
) -> CacheRequest | None:
    """The request behind a prompt (system, history..., question); None if it has no
    question at the end or holds anything but plain text."""
    system = ""
    turns: list[tuple[str, str]] = []
    for message in messages:
        if not isinstance(message.content, str):
            return None
        if isinstance(message, SystemMessage) and not turns:
            system += message.content
        elif isinstance(message, HumanMessage):
            turns.append(("user", message.content))
        elif isinstance(message, AIMessage):
            turns.append(("assistant", message.content))
        else:
            return None
    if not turns or turns[-1][0] != "user":
        return None
    return CacheRequest(
        namespace=namespace,
        organisation_id=organisation_id,
        alias=alias,
        params=params,
        system=system,
        history=tuple(turns[:-1]),
        question=turns[-1][1],
    )
