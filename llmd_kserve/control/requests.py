"""An OpenAI request parsed in one place: validation, the prompt shape, the client's request id, prompt tokens."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from llmd_kserve.control.responses import read_responses
from llmd_kserve.errors import InvalidRequestError, NotFound
from llmd_kserve.prompt import Kind, Prompt, read_prompt

__all__ = ["MAX_REQUEST_ID_CHARS", "Kind", "ParsedRequest", "RouteKind", "count_prompt", "known_prompt_tokens",
           "request_id", "validate_request"]
log = logging.getLogger(__name__)
_json_decode = msgspec.json.Decoder().decode
RouteKind = Kind | Literal["responses"]
"""What a route serves: completions, chat, or the Responses API (read as a chat conversation)."""


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A validated OpenAI request: the decoded body plus what routing needs from it."""

    kind: Kind
    body: dict[str, Any]
    model: str | None
    stream: bool
    max_tokens: int | None
    prompt: Prompt
    """The prompt read once: its prompts (text or token ids) and every string the engine renders."""

    @property
    def token_ids(self) -> tuple[int, ...] | None:
        """Prompt ids when the client sent token ids (a list of ints, or the first of a list of lists)."""
        return self.prompt.first_ids


MAX_REQUEST_ID_CHARS = 128


def request_id(headers: Mapping[str, str]) -> str | None:
    """The client's ``x-request-id`` when it sent one: at most 128 printable ASCII characters, else 400 (it keys
    in-flight load and the decision log, and is echoed back and forwarded)."""
    value = headers.get("x-request-id")
    if not value:
        return None
    if len(value) > MAX_REQUEST_ID_CHARS or not (value.isascii() and value.isprintable()):
        raise InvalidRequestError(f"'x-request-id' must be 1-{MAX_REQUEST_ID_CHARS} printable ASCII characters.",
                                  "x-request-id")
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_request(raw: bytes, kind: RouteKind, known_models: Collection[str] = ()) -> ParsedRequest:
    """Decode and validate an OpenAI completions/chat/responses body; raise ``InvalidRequestError`` (4xx) when
    malformed. A Responses request comes back as a chat request (its ``input`` as the conversation)."""
    try:
        body = _json_decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"Request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequestError("Request body is nested too deeply.") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("Request body must be a JSON object.")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequestError("'model' must be a string.", "model")
    if model is not None and known_models and model not in known_models:
        raise NotFound(f"The model `{model}` does not exist.", "model")
    if kind == "responses":
        prompt, max_tokens = read_responses(body)
        names: tuple[str, ...] = ()
    else:
        prompt, max_tokens = read_prompt(body, kind), None
        names = ("max_tokens", "max_completion_tokens")
    for name in names:
        v = body.get(name)
        if v is None:
            continue
        if not _is_int(v) or v < 1:
            raise InvalidRequestError(f"'{name}' must be an integer >= 1.", name)
        max_tokens = v
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequestError("'stream' must be a boolean.", "stream")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise InvalidRequestError("'stream_options' must be an object.", "stream_options")
    for name in ("temperature", "top_p"):
        v = body.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise InvalidRequestError(f"'{name}' must be a number.", name)
    n = body.get("n")
    if n is not None and (not _is_int(n) or n < 1):
        raise InvalidRequestError("'n' must be an integer >= 1.", "n")
    return ParsedRequest(prompt.kind, body, model, stream, max_tokens, prompt)


def count_prompt(req: ParsedRequest, tokenizer: Any) -> tuple[int, tuple[int, ...]] | None:
    """(prompt tokens over all prompts, the first prompt's ids) with the router's tokenizer; None when the request
    sent token ids (they are counted already) or its template cannot be rendered."""
    if req.token_ids is not None:
        return None
    try:
        ids = [tuple(tokenizer.encode(tokenizer.apply_chat_template(p) if req.kind == "chat" else p))
               for p in ((req.prompt.sent,) if req.kind == "chat" else req.prompt.texts)]
    except Exception as exc:  # a template that cannot render this request: fall back to the estimate
        log.debug("counting prompt tokens failed: %s", exc)
        return None
    return sum(len(i) for i in ids), ids[0]


def known_prompt_tokens(req: ParsedRequest, token_ids: tuple[int, ...] | None) -> int | None:
    """Prompt tokens already known: token ids the client sent, or the ids of a single prompt."""
    if req.prompt.ids:
        return req.prompt.num_ids
    if token_ids is not None and req.prompt.num_prompts == 1:
        return len(token_ids)
    return None
