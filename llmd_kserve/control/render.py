"""Engine-side tokenization for scheduling: vLLM's ``/v1/{chat/}completions/render`` (else ``/tokenize``), cached.

Both endpoints give the ids the engine itself computes: the completions render answers a JSON list (one object per
prompt, ``token_ids``; vLLM 0.26 and 0.32 alike), the chat render one object (the model's chat template applied, no
BOS added beyond what the template writes), ``/tokenize`` an object with ``tokens``. vLLM serves the render
endpoints only when started with ``--enable-scale-out`` (403 otherwise) and versions before them answer 404; such an
engine is said once (a WARNING naming the flag) and asked with ``/tokenize`` from then on, which every vLLM serves
and which gives the same ids. Failures of a request (timeouts, an engine down) are values: the scheduler then
tokenizes locally; they are logged once per kind until a render works again.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from llmd_kserve.control.engine_api import EngineCall
from llmd_kserve.control.requests import ParsedRequest

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_CHAT_FIELDS = ("tools", "chat_template", "chat_template_kwargs", "add_generation_prompt",
                "continue_final_message", "documents", "add_special_tokens")
_COMPLETION_FIELDS = ("add_special_tokens",)
_TOKENIZE_CHAT_FIELDS = ("model", "messages", "tools", "chat_template", "chat_template_kwargs",
                         "add_generation_prompt", "continue_final_message", "add_special_tokens")
_REFUSED = (403, 404, 405)
"""Render answers meaning "not served here": 403 without ``--enable-scale-out``, 404/405 on versions without it."""

Way = Literal["render", "tokenize", "none"]


class RenderError(Exception):
    """An engine's answer that is not a token-id list, or an HTTP error status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


def token_ids_of(data: Any) -> tuple[int, ...]:
    """The prompt's ids in a render or tokenize answer: a list of per-prompt objects (the first is taken), an object
    with ``token_ids`` (render) or ``tokens`` (``/tokenize``); raises :class:`RenderError` otherwise."""
    if isinstance(data, list):
        if not data:
            raise RenderError("empty render answer")
        data = data[0]
    if not isinstance(data, dict):
        raise RenderError(f"render answer is a {type(data).__name__}, not an object")
    ids = data.get("token_ids", data.get("tokens"))
    if not isinstance(ids, list) or not all(type(i) is int for i in ids):
        raise RenderError("render answer has no 'token_ids' (or 'tokens') list of ints")
    return tuple(ids)


class RenderTokenizer:
    """Asks one healthy engine to render a prompt into token ids (exactly what that engine will see), cached by prompt.

    ``pick_endpoint`` returns the base URL of an engine to ask (or None); failures return None so the scheduler
    falls back to its local tokenizer. ``way(base)`` says how an engine is asked: ``render``, ``tokenize`` (it
    refused render) or ``none`` (it refused both: local tokenizer).
    """

    def __init__(self, call: EngineCall, pick_endpoint: Callable[[], str | None],
                 max_entries: int = 4096, timeout: float = 5.0) -> None:
        self._call = call
        self._pick = pick_endpoint
        self._cache: OrderedDict[bytes, tuple[int, ...]] = OrderedDict()
        self._max = max_entries
        self._timeout = timeout
        self._ways: dict[str, Way] = {}
        self._failing: str | None = None  # the kind of error last logged (logged again only after a success)
        self.hits = 0
        self.misses = 0
        self.failures = 0

    def way(self, base: str) -> Way:
        return self._ways.get(base, "render")

    async def token_ids(self, req: ParsedRequest) -> tuple[int, ...] | None:
        if req.token_ids is not None:
            return req.token_ids
        chat = req.kind == "chat"  # a batch of completions is scheduled on its first prompt
        payload: dict[str, Any] = {"messages": req.prompt.sent} if chat else {"prompt": req.prompt.texts[0]}
        payload.update((k, req.body[k]) for k in (_CHAT_FIELDS if chat else _COMPLETION_FIELDS) if k in req.body)
        if req.model is not None:
            payload["model"] = req.model
        key = req.kind.encode() + _encode(payload)
        ids = self._cache.get(key)
        if ids is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return ids
        self.misses += 1
        ids = await self._ask(req.kind, payload)
        if ids is not None:
            self._cache[key] = ids
            if len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return ids

    async def _ask(self, kind: str, payload: dict[str, Any]) -> tuple[int, ...] | None:
        base = self._pick()
        if base is None:
            return None
        way = self.way(base)
        try:
            if way == "render":
                path = "/v1/chat/completions/render" if kind == "chat" else "/v1/completions/render"
                try:
                    ids = await self._post(base, path, payload)
                except RenderError as exc:
                    if exc.status not in _REFUSED:
                        raise
                    way = self._refused(base, path, exc.status, "tokenize")
            if way == "tokenize":
                try:
                    ids = await self._post(base, "/tokenize", _tokenize_payload(kind, payload))
                except RenderError as exc:
                    if exc.status not in _REFUSED:
                        raise
                    self._refused(base, "/tokenize", exc.status, "none")
                    return None
            elif way == "none":
                return None
        except Exception as exc:  # expected failure: the scheduler tokenizes locally
            self.failures += 1
            self._log_failure(base, exc)
            return None
        if self._failing is not None:
            self._failing = None
            log.info("rendering prompts on the engines works again")
        return ids

    async def _post(self, base: str, path: str, payload: dict[str, Any]) -> tuple[int, ...]:
        status, raw = await self._call(base, path, _encode(payload), self._timeout)
        if status != 200:
            raise RenderError(f"HTTP {status}: {raw[:200]!r}", status)
        try:
            return token_ids_of(_decode(raw))
        except msgspec.DecodeError as exc:
            raise RenderError(f"not JSON: {exc}") from exc

    def _refused(self, base: str, path: str, status: int | None, then: Way) -> Way:
        self._ways[base] = then
        if path == "/tokenize":
            log.warning("the engine at %s answers %s to %s too: prompts are tokenized by the router's local "
                        "tokenizer (give --tokenizer a model directory to match the engine's ids)", base, status,
                        path)
        elif status == 403:
            log.warning("the engine at %s refuses %s (HTTP 403): start vLLM with --enable-scale-out to let the router "
                        "render prompts; until then it asks that engine's /tokenize instead", base, path)
        else:
            log.warning("the engine at %s has no %s (HTTP %s: a vLLM version without render endpoints); the router "
                        "asks its /tokenize instead", base, path, status)
        return then

    def _log_failure(self, base: str, exc: Exception) -> None:
        kind = type(exc).__name__ if not isinstance(exc, RenderError) else f"HTTP {exc.status}"
        if self._failing != kind:
            self._failing = kind
            log.warning("rendering a prompt on %s failed (%s: %s); tokenizing locally until it works again", base,
                        type(exc).__name__, str(exc)[:200])
        else:
            log.debug("rendering a prompt on %s failed: %s", base, exc)


def _tokenize_payload(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The ``/tokenize`` body asking for what the render endpoint would have answered."""
    if kind == "chat":
        return {k: payload[k] for k in _TOKENIZE_CHAT_FIELDS if k in payload}
    return {k: payload[k] for k in ("model", "prompt", "add_special_tokens") if k in payload}
