"""Producer ``tokenize-producer``: the prompt's token ids and block keys, computed once per request."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import ClassVar

from pydantic import Field

from llmd_kserve.errors import InvalidRequestError
from llmd_kserve.kvcache.hashing import block_keys
from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams
from llmd_kserve.types import LLMRequest

logger = logging.getLogger(__name__)


class TokenizeProducer:
    """Token ids from ``request.token_ids`` when the router already has them (client sent ids, or the router
    rendered the prompt with the engine's ``/render``), else from the local tokenizer (chat bodies through the
    tokenizer's chat template); then the router's chained block keys of every full block.

    Tokenizations of recent prompt texts are kept in an LRU of ``cacheSize`` entries.
    """

    type: ClassVar[str] = "tokenize-producer"
    kind: ClassVar[str] = "producer"

    class Params(PluginParams):
        cache_size: int = Field(1024, ge=0)
        """Prompt texts whose token ids are remembered (0: no cache)."""

    requires: tuple[str, ...] = ()

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self._tokenizer = ctx.tokenizer
        self._block_size = ctx.block_size
        self._seed = ctx.hash_seed
        self._cache_size = params.cache_size
        self._cache: OrderedDict[str, tuple[int, ...]] = OrderedDict()

    def produce(self, state: CycleState) -> None:
        ids = self.token_ids(state.request)
        state.token_ids = ids
        state.block_keys = block_keys(ids, self._block_size, self._seed)

    def token_ids(self, request: LLMRequest) -> Sequence[int]:
        if request.token_ids is not None:
            return request.token_ids
        body = request.body
        if request.kind == "chat":
            messages = body.get("messages")
            if not isinstance(messages, Sequence) or isinstance(messages, str):
                raise InvalidRequestError("'messages' must be a list of messages", param="messages")
            return self._encode(self._tokenizer.apply_chat_template(messages))
        prompt = body.get("prompt", "")
        if isinstance(prompt, str):
            return self._encode(prompt)
        if isinstance(prompt, Sequence) and prompt:
            first = prompt[0]
            if isinstance(first, int):  # a prompt given as token ids
                return tuple(prompt)
            if isinstance(first, str):  # a batch of prompts: route by the first one
                return self._encode(first)
            if isinstance(first, Sequence) and not isinstance(first, (str, Mapping)):
                return tuple(first)
        return ()

    def _encode(self, text: str) -> tuple[int, ...]:
        cache = self._cache
        ids = cache.get(text)
        if ids is not None:
            cache.move_to_end(text)
            return ids
        ids = tuple(self._tokenizer.encode(text))
        if self._cache_size:
            cache[text] = ids
            if len(cache) > self._cache_size:
                cache.popitem(last=False)
        return ids
