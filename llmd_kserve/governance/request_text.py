"""The text an engine renders from an OpenAI request (what guardrails check and the audit trail records), and the
normal form that keyword matching uses.

The text is the prompt's rendered strings (``llmd_kserve.prompt``), token-id prompts turned back into text first
when a detokenizer is given; pieces are joined by newlines.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from llmd_kserve.prompt import Kind, Prompt, read_prompt

Detokenize = Callable[[Sequence[int]], str]
"""Token ids → the text they stand for (a model tokenizer's ``decode``)."""


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


def prompt_text(prompt: Prompt, detokenize: Detokenize | None = None) -> RequestText:
    """The prompt's rendered text; token-id prompts are decoded with ``detokenize``, else kept as ``unread``."""
    ids = prompt.ids
    if not ids:
        return RequestText("\n".join(prompt.strings))
    n_ids = sum(len(p) for p in ids)
    if detokenize is None:
        return RequestText("\n".join(prompt.strings), n_ids, ids)
    return RequestText("\n".join([*map(detokenize, ids), *prompt.strings]), n_ids)


def request_text(body: Mapping[str, Any], kind: Kind, detokenize: Detokenize | None = None) -> RequestText:
    """The rendered text of a decoded request body (``InvalidRequestError`` when its prompt's shape is wrong)."""
    return prompt_text(read_prompt(body, kind), detokenize)


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
