"""An OpenAI request parsed in one place: validation, the prompt shape, the client's request id, prompt tokens."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from llmd_kserve.errors import InvalidRequestError, NotFound
from llmd_kserve.governance.request_text import request_chars

log = logging.getLogger(__name__)
Kind = Literal["completion", "chat"]
_json_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A validated OpenAI request: the decoded body plus what routing needs from it."""

    kind: Kind
    body: dict[str, Any]
    model: str | None
    stream: bool
    max_tokens: int | None
    prompt_chars: int
    """Characters of every string the engine renders (all prompts of a batch and ``suffix``; every string in
    ``messages``, ``role`` and ``name`` included, and in ``tools``, ``documents``, ``chat_template_kwargs``)."""
    token_ids: tuple[int, ...] | None
    """Prompt ids when the client sent token ids (a list of ints, or the first of a list of lists)."""
    prompt_token_ids: int = 0
    """Token ids the client sent, over all prompts of a batch (0 for text prompts)."""
    num_prompts: int = 1


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


def _check_prompt(prompt: Any) -> tuple[int, tuple[int, ...] | None, int, int]:
    """(chars, token ids of the first prompt, token ids in all, prompts) of a completions prompt:
    str, [str], [int] or [[int]]."""
    if isinstance(prompt, str):
        return len(prompt), None, 0, 1
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return sum(len(p) for p in prompt), None, 0, len(prompt)
        if all(_is_int(p) for p in prompt):
            return 0, tuple(prompt), len(prompt), 1
        if all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in prompt):
            return 0, tuple(prompt[0]), sum(len(p) for p in prompt), len(prompt)
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


def validate_request(raw: bytes, kind: Kind, known_models: Collection[str] = ()) -> ParsedRequest:
    """Decode and validate an OpenAI completions/chat body; raise ``InvalidRequestError`` (4xx) when malformed."""
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
    token_ids: tuple[int, ...] | None = None
    n_ids, n_prompts = 0, 1
    if kind == "chat":
        if "messages" not in body:
            raise InvalidRequestError("'messages' is required.", "messages")
        _check_messages(body["messages"])
    else:
        if "prompt" not in body:
            raise InvalidRequestError("'prompt' is required.", "prompt")
        _, token_ids, n_ids, n_prompts = _check_prompt(body["prompt"])
        if body.get("suffix") is not None and not isinstance(body["suffix"], str):
            raise InvalidRequestError("'suffix' must be a string.", "suffix")
    chars = request_chars(body, kind)  # every string counts: names, image URLs, tool calls, not only text parts
    max_tokens = None
    for name in ("max_tokens", "max_completion_tokens"):
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
    return ParsedRequest(kind, body, model, stream, max_tokens, chars, token_ids, n_ids, n_prompts)




def prompts_of(req: ParsedRequest) -> list[Any]:
    """What the tokenizer reads, one item per prompt: the chat's messages, or each completions prompt."""
    if req.kind == "chat":
        return [req.body["messages"]]
    prompt = req.body["prompt"]
    return [prompt] if isinstance(prompt, str) else list(prompt)


def count_prompt(req: ParsedRequest, tokenizer: Any) -> tuple[int, tuple[int, ...]] | None:
    """(prompt tokens over all prompts, the first prompt's ids) with the router's tokenizer; None when the request
    sent token ids (they are counted already) or its template cannot be rendered."""
    if req.token_ids is not None:
        return None
    try:
        ids = [tuple(tokenizer.encode(tokenizer.apply_chat_template(p) if req.kind == "chat" else p))
               for p in prompts_of(req)]
    except Exception as exc:  # a template that cannot render this request: fall back to the estimate
        log.debug("counting prompt tokens failed: %s", exc)
        return None
    return sum(len(i) for i in ids), ids[0]


def known_prompt_tokens(req: ParsedRequest, token_ids: tuple[int, ...] | None) -> int | None:
    """Prompt tokens already known: token ids the client sent, or the ids of a single prompt."""
    if req.prompt_token_ids:
        return req.prompt_token_ids
    if token_ids is not None and req.num_prompts == 1:
        return len(token_ids)
    return None
