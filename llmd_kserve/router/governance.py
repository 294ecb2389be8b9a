"""Gateway governance: request validation, bearer-token auth, audit logging and simple policy limits."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec

from llmd_kserve.defaults import MAX_PROMPT_CHARS
from llmd_kserve.errors import InvalidRequestError, NotFound, Unauthorized
from llmd_kserve.governance.request_text import request_chars

audit_log = logging.getLogger("llmd_kserve.audit")
"""Dedicated logger for the audit trail; route it with logging config (only llmd_kserve.cli configures logging)."""

Kind = Literal["completion", "chat"]
AuditMode = Literal["off", "hash", "full"]
_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode


class AuthHook(Protocol):
    """Checks a request's headers; returns the caller's principal or raises ``Unauthorized`` (401)."""

    def check(self, headers: Mapping[str, str]) -> str | None: ...


class BearerTokenAuth:
    """``Authorization: Bearer <token>`` against a fixed set of tokens; the principal is a short token hash."""

    def __init__(self, tokens: Collection[str]) -> None:
        self._tokens = frozenset(t for t in tokens if t)

    def check(self, headers: Mapping[str, str]) -> str | None:
        value = headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self._tokens:
            raise Unauthorized("Invalid or missing API key (Authorization: Bearer <key>).")
        return hashlib.sha256(token.strip().encode()).hexdigest()[:12]


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


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-request maximums; None: no limit."""

    max_prompt_chars: int | None = MAX_PROMPT_CHARS
    """Characters of every string the engine renders (``ParsedRequest.prompt_chars``)."""
    max_prompt_tokens: int | None = 131_072
    """Prompt tokens over all prompts of a request (token ids as sent, or text as the router tokenizes it)."""
    max_batch_size: int | None = 256
    """Prompts in one completions request."""


def _too_large(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param, status=413, type_="RequestTooLargeError")


@dataclass(frozen=True, slots=True)
class Governance:
    """Auth, policy limits and the audit trail; the router calls ``authorize`` then ``check_policy`` then ``audit``.

    ``audit_salt`` keys the prompt hash (HMAC-SHA256), so a short prompt cannot be confirmed from the audit log by
    hashing guesses; by default it is random per process (hashes correlate within one router's life only).
    """

    auth: AuthHook | None = None
    limits: Limits = Limits()
    audit_mode: AuditMode = "off"
    audit_salt: bytes = field(default_factory=lambda: secrets.token_bytes(16))

    @property
    def max_prompt_chars(self) -> int | None:
        return self.limits.max_prompt_chars

    def authorize(self, headers: Mapping[str, str]) -> str | None:
        return self.auth.check(headers) if self.auth is not None else None

    def check_policy(self, req: ParsedRequest) -> None:
        """Limits that need no tokenizer: characters, batch size, token ids sent as ids."""
        lim, param = self.limits, "messages" if req.kind == "chat" else "prompt"
        if lim.max_batch_size is not None and req.num_prompts > lim.max_batch_size:
            raise _too_large(f"Request has {req.num_prompts} prompts; this gateway allows at most "
                             f"{lim.max_batch_size} per request.", "prompt")
        if lim.max_prompt_chars is not None and req.prompt_chars > lim.max_prompt_chars:
            raise _too_large(f"Request text has {req.prompt_chars} characters (prompt, messages and every other "
                             f"string the model reads); this gateway allows at most {lim.max_prompt_chars}.", param)
        self.check_prompt_tokens(req, req.prompt_token_ids)

    def needs_token_count(self, req: ParsedRequest) -> bool:
        """Whether a text prompt could exceed ``max_prompt_tokens`` (a token covers at least one UTF-8 byte, so
        at most 4 per character, plus a few template tokens per chat message): then tokenize and count it."""
        lim = self.limits.max_prompt_tokens
        if lim is None or req.prompt_token_ids:
            return False
        n_messages = len(req.body.get("messages") or ()) if req.kind == "chat" else 0
        return 4 * req.prompt_chars + 16 * n_messages + 1 > lim

    def check_prompt_tokens(self, req: ParsedRequest, tokens: int) -> None:
        lim = self.limits.max_prompt_tokens
        if lim is not None and tokens > lim:
            raise _too_large(f"Prompt has {tokens} tokens; this gateway allows at most {lim}.",
                             "messages" if req.kind == "chat" else "prompt")

    def audit(self, request_id: str, req: ParsedRequest, endpoint: str, principal: str | None, client: str | None) -> None:
        """One structured line per routed request; the prompt is hashed (salted) or logged in full per ``audit_mode``."""
        if self.audit_mode == "off" or not audit_log.isEnabledFor(logging.INFO):
            return
        prompt = req.body.get("messages") if req.kind == "chat" else req.body.get("prompt")
        prompt_bytes = _json_encode(prompt)
        record: dict[str, Any] = {
            "request_id": request_id, "kind": req.kind, "model": req.model, "endpoint": endpoint,
            "principal": principal, "client": client, "stream": req.stream, "max_tokens": req.max_tokens,
            "prompt_chars": req.prompt_chars,
            "prompt_hmac_sha256": hmac.new(self.audit_salt, prompt_bytes, hashlib.sha256).hexdigest(),
        }
        if self.audit_mode == "full":
            record["prompt"] = prompt
        audit_log.info(_json_encode(record).decode())
