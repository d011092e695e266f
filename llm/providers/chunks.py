"""Plain text chunks built by copying a template, not by validating two pydantic models.

Nearly every chunk of a streamed reply is a plain piece of the assistant's text. Validating a
ChatGenerationChunk and its AIMessageChunk for each costs ~45 us (pydantic's model_construct is
no cheaper: it inspects every default factory's signature), and a model's `__copy__` with its
containers copied ~12 us; building the copy here, as pydantic's own `__copy__` builds one (a
new instance, its `__dict__`, fields set, extras and private slots put in place), from a
snapshot of a template taken once, costs a few microseconds. The objects are the same as
validation builds (llm/tests compare them field for field and slot for slot), each with
containers of its own.
"""

from __future__ import annotations

from typing import Any

from langchain_core.outputs import ChatGenerationChunk

_CONTAINERS = (dict, list)
_new, _set = object.__new__, object.__setattr__


class _Snapshot:
    """One pydantic model's state, to make copies of it with other field values."""

    __slots__ = ("cls", "containers", "extra", "fields", "fields_set", "private")

    def __init__(self, model: Any) -> None:
        self.cls = type(model)
        # Its containers copied now (the template may change later) and for each chunk (no
        # two chunks share a dict or a list).
        self.fields = {
            name: value.copy() if value.__class__ in _CONTAINERS else value
            for name, value in model.__dict__.items()
        }
        self.containers = tuple(
            (name, value) for name, value in self.fields.items() if value.__class__ in _CONTAINERS
        )
        self.extra = model.__pydantic_extra__
        self.fields_set = frozenset(model.__pydantic_fields_set__)
        self.private = model.__pydantic_private__

    def fresh(self) -> dict[str, Any]:
        """The template's fields, each container a new copy: the `__dict__` of a copy."""
        fields = self.fields.copy()
        for name, value in self.containers:
            fields[name] = value.copy()
        return fields

    def build(self, fields: dict[str, Any]) -> Any:
        """A new instance with these fields, and copies of the template's other state."""
        model = _new(self.cls)
        _set(model, "__dict__", fields)
        _set(model, "__pydantic_extra__", None if self.extra is None else dict(self.extra))
        _set(model, "__pydantic_fields_set__", set(self.fields_set))
        _set(model, "__pydantic_private__", None if self.private is None else dict(self.private))
        return model


class TextChunks:
    """Copies of a plain text chunk (`template`), each with its own text."""

    __slots__ = ("_chunk", "_message")

    def __init__(self, template: ChatGenerationChunk) -> None:
        self._chunk = _Snapshot(template)
        self._message = _Snapshot(template.message)

    def make(self, text: str) -> ChatGenerationChunk:
        # Runs once per token: both objects built here, no keyword arguments on the way.
        fields = self._message.fresh()
        fields["content"] = text
        envelope = self._chunk.fresh()
        envelope["message"] = self._message.build(fields)
        envelope["text"] = text
        chunk: ChatGenerationChunk = self._chunk.build(envelope)
        return chunk
