"""Gateway governance: request validation, bearer-token auth, audit logging and simple policy limits."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import msgspec

from llmd_kserve.errors import InvalidRequestError, NotFound, Unauthorized

audit_log = logging.getLogger("llmd_kserve.audit")
"""Dedicated logger for the audit trail; route it with logging config (only cli.py configures logging)."""

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
    token_ids: tuple[int, ...] | None
    """Prompt ids when the client sent token ids (a list of ints, or the first of a list of lists)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_prompt(prompt: Any) -> tuple[int, tuple[int, ...] | None]:
    """Return (chars, token ids) of a completions prompt: str, [str], [int] or [[int]]."""
    if isinstance(prompt, str):
        return len(prompt), None
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return sum(len(p) for p in prompt), None
        if all(_is_int(p) for p in prompt):
            return 0, tuple(prompt)
        if all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in prompt):
            return 0, tuple(prompt[0])
    raise InvalidRequestError("'prompt' must be a string, a list of strings, or (lists of) token ids.", "prompt")


def _check_messages(messages: Any) -> int:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty list.", "messages")
    chars = 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidRequestError(f"messages[{i}] must be an object with a string 'role'.", f"messages[{i}]")
        content = m.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    raise InvalidRequestError(f"messages[{i}].content parts must be objects.", f"messages[{i}].content")
                text = part.get("text")
                chars += len(text) if isinstance(text, str) else 0
        elif content is not None:
            raise InvalidRequestError(f"messages[{i}].content must be a string, a list of parts or null.",
                                      f"messages[{i}].content")
    return chars


def validate_request(raw: bytes, kind: Kind, known_models: Collection[str] = ()) -> ParsedRequest:
    """Decode and validate an OpenAI completions/chat body; raise ``InvalidRequestError`` (4xx) when malformed."""
    try:
        body = _json_decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("Request body must be a JSON object.")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequestError("'model' must be a string.", "model")
    if model is not None and known_models and model not in known_models:
        raise NotFound(f"The model `{model}` does not exist.", "model")
    token_ids: tuple[int, ...] | None = None
    if kind == "chat":
        if "messages" not in body:
            raise InvalidRequestError("'messages' is required.", "messages")
        chars = _check_messages(body["messages"])
    else:
        if "prompt" not in body:
            raise InvalidRequestError("'prompt' is required.", "prompt")
        chars, token_ids = _check_prompt(body["prompt"])
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
    return ParsedRequest(kind, body, model, stream, max_tokens, chars, token_ids)


@dataclass(frozen=True, slots=True)
class Governance:
    """Auth, policy limits and the audit trail; the router calls ``authorize`` then ``check_policy`` then ``audit``."""

    auth: AuthHook | None = None
    max_prompt_chars: int | None = None
    audit_mode: AuditMode = "off"

    def authorize(self, headers: Mapping[str, str]) -> str | None:
        return self.auth.check(headers) if self.auth is not None else None

    def check_policy(self, req: ParsedRequest) -> None:
        if self.max_prompt_chars is not None and req.prompt_chars > self.max_prompt_chars:
            raise InvalidRequestError(
                f"Prompt has {req.prompt_chars} characters; this gateway allows at most {self.max_prompt_chars}.",
                "messages" if req.kind == "chat" else "prompt", status=413, type_="RequestTooLargeError")

    def audit(self, request_id: str, req: ParsedRequest, endpoint: str, principal: str | None, client: str | None) -> None:
        """One structured line per routed request; the prompt is hashed or logged in full per ``audit_mode``."""
        if self.audit_mode == "off" or not audit_log.isEnabledFor(logging.INFO):
            return
        prompt = req.body.get("messages") if req.kind == "chat" else req.body.get("prompt")
        prompt_bytes = _json_encode(prompt)
        record: dict[str, Any] = {
            "request_id": request_id, "kind": req.kind, "model": req.model, "endpoint": endpoint,
            "principal": principal, "client": client, "stream": req.stream, "max_tokens": req.max_tokens,
            "prompt_chars": req.prompt_chars, "prompt_sha256": hashlib.sha256(prompt_bytes).hexdigest(),
        }
        if self.audit_mode == "full":
            record["prompt"] = prompt
        audit_log.info(_json_encode(record).decode())
