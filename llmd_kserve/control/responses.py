"""The OpenAI Responses API (``/v1/responses``) for the router: the request read as a conversation, and which
endpoint holds each stored response, so that a request naming ``previous_response_id`` goes where its state is.

An engine such as vLLM keeps stored responses in its own memory: a continuation sent anywhere else is answered 404.
The router learns each answer's response id (the ``id`` of a whole answer, or of a stream's ``response.created``
event) with the endpoint that produced it, in a bounded table. A continuation of a known response is pinned to that
endpoint; if the endpoint has left the pool, the state is gone with it and the router answers 404 at once (an
OpenAI-shaped ``invalid_request_error`` on ``previous_response_id``), as the engine would, instead of sending it
to an engine that cannot have it. An id the router never saw (another router replica, a restart) is scheduled like
a fresh request: the engine that gets it answers, 404 if it does not hold it.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from typing import Any

from llmd_kserve.errors import InvalidRequestError, NotFound
from llmd_kserve.prompt import Prompt
from llmd_kserve.types import EndpointId

RESPONSES_PATH = "/v1/responses"
MAX_RESPONSES = 100_000
"""Response ids remembered (least recently used forgotten first)."""
_RESPONSE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,256}")
_ANSWER_ID = re.compile(rb'"id" ?: ?"([A-Za-z0-9_.:-]{1,256})"')


def _strings(v: Any) -> list[str]:
    """Every string in a decoded JSON value, depth first (what the engine renders of it)."""
    out: list[str] = []
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, dict):
            stack.extend(reversed(list(x.values())))
        elif isinstance(x, list):
            stack.extend(reversed(x))
    return out


def _as_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``instructions`` and ``input`` as chat messages (what the engine's template renders, near enough to place
    the request by its prefix)."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise InvalidRequestError("'instructions' must be a string.", "instructions")
        messages.append({"role": "system", "content": instructions})
    if "input" not in body:
        raise InvalidRequestError("'input' is required.", "input")
    items = body["input"]
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        return messages
    if not isinstance(items, list) or not items:
        raise InvalidRequestError("'input' must be a string or a non-empty list of items.", "input")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidRequestError(f"input[{i}] must be an object.", f"input[{i}]")
        role, content = item.get("role"), item.get("content")
        if role is not None and not isinstance(role, str):
            raise InvalidRequestError(f"input[{i}].role must be a string.", f"input[{i}].role")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequestError(f"input[{i}].content must be a string or a list of parts.",
                                      f"input[{i}].content")
        messages.append({"role": role or str(item.get("type", "item")), "content": " ".join(_strings(
            content if content is not None else {k: v for k, v in item.items() if k != "type"}))})
    return messages


def previous_response_id(body: Mapping[str, Any]) -> str | None:
    """The ``previous_response_id`` a request continues (400 when it is not a well-formed id)."""
    prev = body.get("previous_response_id")
    if prev is None:
        return None
    if not isinstance(prev, str) or not _RESPONSE_ID.fullmatch(prev):
        raise InvalidRequestError("'previous_response_id' must be a response id (1-256 letters, digits, '_', '-', "
                                  "'.', ':').", "previous_response_id")
    return prev


def read_responses(body: Mapping[str, Any]) -> tuple[Prompt, int | None]:
    """(the prompt as a conversation, ``max_output_tokens``) of a Responses request; 400 when malformed."""
    previous_response_id(body)
    messages = _as_messages(body)
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise InvalidRequestError("'max_output_tokens' must be an integer >= 1.", "max_output_tokens")
    store = body.get("store")
    if store is not None and not isinstance(store, bool):
        raise InvalidRequestError("'store' must be a boolean.", "store")
    found = [s for m in messages for s in (m["role"], m["content"])]
    return Prompt("chat", messages, (), (), tuple(found), sum(map(len, found))), max_tokens


class ResponseHomes:
    """Response id -> the endpoint that produced (and stores) it; at most ``max_size``, least recently used out."""

    def __init__(self, max_size: int = MAX_RESPONSES,
                 on_learn: Callable[[str, EndpointId], None] | None = None) -> None:
        self.max_size = max_size
        self.on_learn = on_learn
        """Told of every response id learnt from an answer (shared sessions write it to the store)."""
        self._homes: OrderedDict[str, EndpointId] = OrderedDict()

    def learn(self, response_id: str, endpoint: EndpointId, *, announce: bool = True) -> None:
        """``response_id`` is stored on ``endpoint``; ``announce``: tell ``on_learn`` (not for one read back)."""
        if announce and self.on_learn is not None:
            self.on_learn(response_id, endpoint)
        self._homes[response_id] = endpoint
        self._homes.move_to_end(response_id)
        while len(self._homes) > self.max_size:
            self._homes.popitem(last=False)

    def get(self, response_id: str) -> EndpointId | None:
        home = self._homes.get(response_id)
        if home is not None:
            self._homes.move_to_end(response_id)
        return home

    def pin(self, body: Mapping[str, Any], pool: Collection[EndpointId]) -> EndpointId | None:
        """Where a request must go: the endpoint holding its ``previous_response_id`` (None: no constraint, the id
        is unknown here or absent); 404 when that endpoint has left ``pool`` (the state is gone)."""
        prev = previous_response_id(body)
        home = self.get(prev) if prev is not None else None
        if home is None:
            return None
        if home not in pool:
            raise NotFound(f"Response with id '{prev}' not found: the endpoint that stored it is no longer "
                           "serving.", "previous_response_id")
        return home

    def watcher(self, body: Mapping[str, Any], endpoint: Callable[[], EndpointId | None]) -> Callable[[bytes], None]:
        """A tap for the answer's bytes that learns the response id (once) with ``endpoint()``, the endpoint that
        answered (None: not a success, nothing learnt); does nothing for ``store: false``."""
        seen = [body.get("store") is False]

        def tap(chunk: bytes) -> None:
            if seen[0]:
                return
            m = _ANSWER_ID.search(chunk)
            if m is None:
                return
            seen[0] = True
            where = endpoint()
            if where is not None:
                self.learn(m.group(1).decode(), where)

        return tap

    def __len__(self) -> int:
        return len(self._homes)
