"""The text an engine renders from an OpenAI request (what guardrails check and the audit trail records), and the
normal form that keyword matching uses.

Completions: ``prompt`` (strings, or token ids turned back into text when a detokenizer is given) and ``suffix``.
Chat: every string value in ``messages`` (``role``, ``name``, content parts, tool calls), then every key and string
of ``tools``, ``documents`` and ``chat_template_kwargs``, then a client's ``chat_template``. Pieces are joined by
newlines.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

Detokenize = Callable[[Sequence[int]], str]
"""Token ids → the text they stand for (a model tokenizer's ``decode``)."""

_CHAT_EXTRAS = ("tools", "documents", "chat_template_kwargs", "chat_template")


@dataclass(frozen=True, slots=True)
class RequestText:
    """A request's rendered text; ``unread`` holds the token-id prompts that could not be turned into text."""

    text: str
    token_ids: int = 0
    """Token ids the client sent (0 for text prompts)."""
    unread: tuple[tuple[int, ...], ...] = ()

    @property
    def readable(self) -> bool:
        return not self.unread

    def digest_input(self) -> bytes:
        """What the audit HMAC covers: the text, and the ids of prompts that could not be read."""
        data = self.text.encode()
        if self.unread:
            data += b"\0" + ",".join(" ".join(map(str, p)) for p in self.unread).encode()
        return data


def _is_ids(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(t, int) and not isinstance(t, bool) for t in v)


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


def _prompts(prompt: Any) -> list[str | list[int]]:
    """A completions ``prompt`` as its prompts: text or token ids each."""
    if isinstance(prompt, str) or _is_ids(prompt):
        return [prompt]
    if isinstance(prompt, list):
        return [p for p in prompt if isinstance(p, str) or _is_ids(p)]
    return []


def pieces(body: dict[str, Any], kind: str) -> Iterator[str | list[int]]:
    """The strings the engine renders, in order; a completions token-id prompt comes as its list of ids."""
    if kind == "chat":
        yield from _values(body.get("messages"), keys=False)
        for name in _CHAT_EXTRAS:
            if body.get(name) is not None:
                yield from _values(body[name], keys=True)
    else:
        yield from _prompts(body.get("prompt"))
        if isinstance(body.get("suffix"), str):
            yield body["suffix"]


def request_chars(body: dict[str, Any], kind: str) -> int:
    """Characters of every string the engine renders (token-id prompts count 0: their ids are counted as tokens)."""
    return sum(len(p) for p in pieces(body, kind) if isinstance(p, str))


def request_text(body: dict[str, Any], kind: str, detokenize: Detokenize | None = None) -> RequestText:
    """The request's rendered text; token-id prompts are decoded with ``detokenize``, else kept as ``unread``."""
    out: list[str] = []
    unread: list[tuple[int, ...]] = []
    n_ids = 0
    for p in pieces(body, kind):
        if isinstance(p, str):
            out.append(p)
            continue
        n_ids += len(p)
        if detokenize is not None:
            out.append(detokenize(p))
        else:
            unread.append(tuple(p))
    return RequestText("\n".join(out), n_ids, tuple(unread))


@cache
def _format_chars() -> re.Pattern[str]:
    """A class of every Unicode ``Cf`` (format) character: zero-width spaces and joiners, soft hyphen, bidi marks."""
    cps = [c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    ranges: list[tuple[int, int]] = []
    for c in cps:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1] = (ranges[-1][0], c)
        else:
            ranges.append((c, c))
    body = "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return re.compile(f"[{body}]+")


def warm_up() -> None:
    """Build the format-character table now (a third of a second, once per process) rather than on a request."""
    _format_chars()


def normalize(text: str) -> str:
    """NFKC with format characters dropped: full-width letters and dashes become ASCII, zero-width ones vanish."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", _format_chars().sub("", text))


def fold(text: str) -> str:
    """``normalize`` then case-folded: the form keywords are compared in."""
    return normalize(text).casefold()
