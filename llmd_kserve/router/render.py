"""Engine-side tokenization for scheduling: vLLM's ``/v1/{chat/}completions/render`` with an LRU cache."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec

from llmd_kserve.router.governance import ParsedRequest

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_CHAT_FIELDS = ("messages", "tools", "chat_template", "chat_template_kwargs", "add_generation_prompt",
                "continue_final_message", "documents", "add_special_tokens")
_COMPLETION_FIELDS = ("prompt", "add_special_tokens")


class RenderTokenizer:
    """Asks one healthy engine to render a prompt into token ids (exactly what that engine will see), cached by prompt.

    ``pick_endpoint`` returns the base URL of an engine to ask (or None); failures return None so the scheduler
    falls back to its local tokenizer.
    """

    def __init__(self, session: Callable[[], aiohttp.ClientSession], pick_endpoint: Callable[[], str | None],
                 max_entries: int = 4096, timeout: float = 5.0) -> None:
        self._session = session
        self._pick = pick_endpoint
        self._cache: OrderedDict[bytes, tuple[int, ...]] = OrderedDict()
        self._max = max_entries
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.hits = 0
        self.misses = 0
        self.failures = 0

    async def token_ids(self, req: ParsedRequest) -> tuple[int, ...] | None:
        if req.token_ids is not None:
            return req.token_ids
        fields = _CHAT_FIELDS if req.kind == "chat" else _COMPLETION_FIELDS
        payload: dict[str, Any] = {k: req.body[k] for k in fields if k in req.body}
        if req.kind == "completion" and isinstance(payload.get("prompt"), list):
            payload["prompt"] = payload["prompt"][0]  # schedule on the first prompt of a batch
        if req.model is not None:
            payload["model"] = req.model
        key = req.kind.encode() + _encode(payload)
        ids = self._cache.get(key)
        if ids is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return ids
        self.misses += 1
        ids = await self._render(req.kind, payload)
        if ids is not None:
            self._cache[key] = ids
            if len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return ids

    async def _render(self, kind: str, payload: dict[str, Any]) -> tuple[int, ...] | None:
        base = self._pick()
        if base is None:
            return None
        url = f"{base}/v1/chat/completions/render" if kind == "chat" else f"{base}/v1/completions/render"
        try:
            async with self._session().post(url, data=_encode(payload), timeout=self._timeout,
                                            headers={"Content-Type": "application/json"}) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {raw[:200]!r}")
            data = _decode(raw)
            if isinstance(data, list):  # /v1/completions/render answers one result per prompt
                data = data[0]
            return tuple(data["token_ids"])
        except Exception as exc:  # expected failure: fall back to local tokenization
            self.failures += 1
            log.warning("render via %s failed (%s); tokenizing locally", url, exc)
            return None
