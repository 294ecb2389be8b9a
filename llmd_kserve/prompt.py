"""The prompt of an OpenAI request read in one place: its shape checked, its prompts and rendered strings taken once.

Completions: ``prompt`` is a string, a list of strings, a list of token ids or a list of token-id lists; ``suffix``
a string. Chat: ``messages`` is a non-empty list of objects with a string ``role`` and a string, content-part list or
null ``content``. The strings the engine renders are, for completions, the text prompts then ``suffix``; for chat,
every string value in ``messages`` (``role``, ``name``, content parts, tool calls), then every key and string of
``tools``, ``documents`` and ``chat_template_kwargs``, then a client's ``chat_template``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from llmd_kserve.errors import InvalidRequestError

Kind = Literal["completion", "chat"]
_CHAT_EXTRAS = ("tools", "documents", "chat_template_kwargs", "chat_template")


@dataclass(frozen=True, slots=True)
class Prompt:
    """A request's prompt, read once: what the engine tokenizes and every string it renders."""

    kind: Kind
    sent: Any
    """``prompt`` or ``messages`` exactly as the client sent it (the chat template reads it; the audit line hashes it)."""
    texts: tuple[str, ...]
    """Completions: the text prompts, one per prompt (empty when the prompts are token ids, and for chat)."""
    ids: tuple[tuple[int, ...], ...]
    """Completions: the token-id prompts, one per prompt (empty when the prompts are text, and for chat)."""
    strings: tuple[str, ...]
    """Every string the engine renders, in order (see the module docstring); token-id prompts are not among them."""
    chars: int
    """Characters of ``strings``."""

    @property
    def field(self) -> str:
        """The body field holding the prompt: ``messages`` or ``prompt`` (the ``param`` of errors about it)."""
        return "messages" if self.kind == "chat" else "prompt"

    @property
    def num_prompts(self) -> int:
        return len(self.texts) or len(self.ids) or 1

    @property
    def num_messages(self) -> int:
        return len(self.sent) if self.kind == "chat" else 0

    @property
    def first_ids(self) -> tuple[int, ...] | None:
        """The first prompt's token ids when the client sent token ids."""
        return self.ids[0] if self.ids else None

    @property
    def num_ids(self) -> int:
        """Token ids the client sent, over all prompts (0 for text prompts)."""
        return sum(len(p) for p in self.ids)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _completion_prompts(prompt: Any) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """(text prompts, token-id prompts) of a completions ``prompt``: str, [str], [int] or [[int]]."""
    if isinstance(prompt, str):
        return (prompt,), ()
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return tuple(prompt), ()
        if all(_is_int(p) for p in prompt):
            return (), (tuple(prompt),)
        if all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in prompt):
            return (), tuple(tuple(p) for p in prompt)
    raise InvalidRequestError("'prompt' must be a string, a list of strings, or (lists of) token ids.", "prompt")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty list.", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidRequestError(f"messages[{i}] must be an object with a string 'role'.", f"messages[{i}]")
        content = m.get("content")
        if isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    raise InvalidRequestError(f"messages[{i}].content parts must be objects.", f"messages[{i}].content")
        elif content is not None and not isinstance(content, str):
            raise InvalidRequestError(f"messages[{i}].content must be a string, a list of parts or null.",
                                      f"messages[{i}].content")


def _values(v: Any, keys: bool) -> Iterator[str]:
    """Every string in a decoded JSON value (dict keys too when ``keys``), depth first, without recursion."""
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            yield x
        elif isinstance(x, dict):
            items: list[Any] = []
            for k, y in x.items():
                if keys:
                    items.append(k)
                items.append(y)
            stack.extend(reversed(items))
        elif isinstance(x, list):
            stack.extend(reversed(x))


def read_prompt(body: Mapping[str, Any], kind: Kind) -> Prompt:
    """The prompt of a decoded completions or chat body; ``InvalidRequestError`` (400) when its shape is wrong."""
    if kind == "chat":
        if "messages" not in body:
            raise InvalidRequestError("'messages' is required.", "messages")
        messages = body["messages"]
        _check_messages(messages)
        found = list(_values(messages, keys=False))
        for name in _CHAT_EXTRAS:
            if body.get(name) is not None:
                found.extend(_values(body[name], keys=True))
        return Prompt(kind, messages, (), (), tuple(found), sum(map(len, found)))
    if "prompt" not in body:
        raise InvalidRequestError("'prompt' is required.", "prompt")
    prompt = body["prompt"]
    texts, ids = _completion_prompts(prompt)
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise InvalidRequestError("'suffix' must be a string.", "suffix")
    strings = texts + (suffix,) if suffix is not None else texts
    return Prompt(kind, prompt, texts, ids, strings, sum(map(len, strings)))
