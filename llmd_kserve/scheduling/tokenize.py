"""Producer ``tokenize-producer``: the prompt's token ids and block keys, computed once per request."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import ClassVar

from pydantic import Field

from llmd_kserve.errors import InvalidRequestError
from llmd_kserve.kvcache.hashing import block_keys
from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams
from llmd_kserve.types import BlockKey, LLMRequest

logger = logging.getLogger(__name__)


class _CachedIds(Sequence[int]):
    """The token ids of a prompt text seen before: its length at hand, the ids themselves tokenized again (the
    tokenizer's chunk cache usually has them) only if a plugin reads them; the scheduler's own plugins read only
    the length and the cached block keys."""

    __slots__ = ("_n", "_encode", "_text", "_ids")

    def __init__(self, n: int, encode: Callable[[str], Sequence[int]], text: str) -> None:
        self._n, self._encode, self._text = n, encode, text
        self._ids: tuple[int, ...] | None = None

    def _get(self) -> tuple[int, ...]:
        if self._ids is None:
            self._ids = tuple(self._encode(self._text))
        return self._ids

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN204 - int or slice, as tuple's
        return self._get()[i]

    def __iter__(self) -> Iterator[int]:
        return iter(self._get())


class TokenizeProducer:
    """Token ids from ``request.token_ids`` when the router already has them (client sent ids, or the router
    rendered the prompt with the engine's ``/render``), else from the local tokenizer (chat bodies through the
    tokenizer's chat template); then the router's chained block keys of every full block.

    Recent prompt texts seen more than once (an LRU of ``cacheSize`` entries) keep their token count and block keys,
    not their ids (an 8k-token prompt's ids as Python ints are ~330 kB, its keys ~20 kB): a repeated text costs one
    dict lookup. A text is admitted on its second sight (the hashes of the last ``cacheSize`` texts seen once are
    remembered), so prompts sent once do not fill the cache: they would keep their whole text alive.
    """

    type: ClassVar[str] = "tokenize-producer"
    kind: ClassVar[str] = "producer"

    class Params(PluginParams):
        cache_size: int = Field(1024, ge=0)
        """Prompt texts whose token count and block keys are remembered (0: no cache)."""

    requires: tuple[str, ...] = ()

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self._tokenizer = ctx.tokenizer
        self._block_size = ctx.block_size
        self._seed = ctx.hash_seed
        self._cache_size = params.cache_size
        self._cache: OrderedDict[str, tuple[int, tuple[BlockKey, ...]]] = OrderedDict()
        self._seen: OrderedDict[int, None] = OrderedDict()  # hash(text) of texts seen once (a collision only admits)

    def produce(self, state: CycleState) -> None:
        source = self._source(state.request)
        if not isinstance(source, str):
            state.token_ids = source
            state.block_keys = block_keys(source, self._block_size, self._seed)
            return
        cache = self._cache
        hit = cache.get(source)
        if hit is not None:
            cache.move_to_end(source)
            state.token_ids = _CachedIds(hit[0], self._tokenizer.encode, source)
            state.block_keys = hit[1]
            return
        ids = self._tokenizer.encode(source)  # read-only from here on (the tokenizer may share the list)
        keys = tuple(block_keys(ids, self._block_size, self._seed))
        state.token_ids, state.block_keys = ids, keys
        if self._cache_size:
            self._admit(source, (len(ids), keys))

    def _admit(self, text: str, entry: tuple[int, tuple[BlockKey, ...]]) -> None:
        seen, h = self._seen, hash(text)  # str caches its hash: the lookup above computed it
        if h not in seen:
            seen[h] = None
            if len(seen) > self._cache_size:
                seen.popitem(last=False)
            return
        del seen[h]
        cache = self._cache
        cache[text] = entry
        if len(cache) > self._cache_size:
            cache.popitem(last=False)

    def _source(self, request: LLMRequest) -> str | Sequence[int]:
        """The prompt's token ids when the request carries them, else the text to tokenize."""
        if request.token_ids is not None:
            return request.token_ids
        body = request.body
        if request.kind == "chat":
            messages = body.get("messages")
            if not isinstance(messages, Sequence) or isinstance(messages, str):
                raise InvalidRequestError("'messages' must be a list of messages", param="messages")
            return self._tokenizer.apply_chat_template(messages)
        prompt = body.get("prompt", "")
        if isinstance(prompt, str):
            return prompt
        if isinstance(prompt, Sequence) and prompt:
            first = prompt[0]
            if isinstance(first, int):  # a prompt given as token ids
                return tuple(prompt)
            if isinstance(first, str):  # a batch of prompts: route by the first one
                return first
            if isinstance(first, Sequence) and not isinstance(first, (str, Mapping)):
                return tuple(first)
        return ()
