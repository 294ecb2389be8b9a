"""Producer ``tokenize-producer``: the prompt's token ids and block keys, computed once per request."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import ClassVar

from pydantic import Field

from llmd_kserve.kvcache.hashing import block_keys
from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams
from llmd_kserve.prompt import read_prompt
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


_Entry = tuple[int, dict[int, tuple[BlockKey, ...]]]
"""A cached prompt text: its token count and its block keys by block size."""


class TokenizeProducer:
    """Token ids from ``request.token_ids`` when the router already has them (client sent ids, or the router
    rendered the prompt with the engine's ``/render``), else from the local tokenizer (chat bodies through the
    tokenizer's chat template, encoded as the engine encodes a rendered chat: without adding special tokens); then
    the router's chained block keys of every full block, in each candidate's block size (``ctx.block_size_of``):
    ``state.block_keys`` in the size of most candidates, ``state.keys_by_size`` in the others.

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
        self._size_of = ctx.block_size_of
        self._seed = ctx.hash_seed
        self._cache_size = params.cache_size
        self._cache: OrderedDict[tuple[bool, str], _Entry] = OrderedDict()
        self._seen: OrderedDict[int, None] = OrderedDict()  # hash of (special, text) seen once (a collision admits)

    def produce(self, state: CycleState) -> None:
        sizes = self._sizes(state)
        main = state.block_size
        source, special = self._source(state.request)
        if not isinstance(source, str):
            state.token_ids = source
            state.block_keys = block_keys(source, main, self._seed)
            self._other_sizes(state, sizes, source, None)
            return
        key = (special, source)
        cache = self._cache
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            ids: Sequence[int] = _CachedIds(hit[0], self._encoder(special), source)
            by_size = hit[1]
            if main not in by_size:
                by_size[main] = tuple(block_keys(ids, main, self._seed))
            state.token_ids, state.block_keys = ids, by_size[main]
            self._other_sizes(state, sizes, ids, by_size)
            return
        ids = self._tokenizer.encode(source, add_special_tokens=special)  # read-only from here on (may be shared)
        keys = tuple(block_keys(ids, main, self._seed))
        state.token_ids, state.block_keys = ids, keys
        by_size = {main: keys}
        self._other_sizes(state, sizes, ids, by_size)
        if self._cache_size:
            self._admit(key, (len(ids), by_size))

    def _sizes(self, state: CycleState) -> set[int]:
        """Fill ``state.block_sizes`` and ``state.block_size`` (the most common); return the distinct sizes."""
        size_of, default = self._size_of, self._block_size
        if size_of is None:
            sizes = {c.endpoint.id: c.metrics.block_size or default for c in state.candidates}
        else:
            sizes = {c.endpoint.id: size_of(c) or default for c in state.candidates}
        distinct = set(sizes.values())
        if len(distinct) <= 1:
            state.block_size = next(iter(distinct), default)
        else:
            counts: dict[int, int] = {}
            for v in sizes.values():
                counts[v] = counts.get(v, 0) + 1
            state.block_size = max(sorted(counts), key=counts.__getitem__)
        state.block_sizes = sizes
        return distinct

    def _other_sizes(self, state: CycleState, sizes: set[int], ids: Sequence[int],
                     by_size: dict[int, tuple[BlockKey, ...]] | None) -> None:
        """``state.keys_by_size`` for the candidates whose block size is not ``state.block_size``."""
        if len(sizes) <= 1:
            return
        out: dict[int, Sequence[BlockKey]] = {}
        for size in sizes:
            if size == state.block_size:
                continue
            keys = by_size.get(size) if by_size is not None else None
            if keys is None:
                keys = tuple(block_keys(ids, size, self._seed))
                if by_size is not None:
                    by_size[size] = keys
            out[size] = keys
        state.keys_by_size = out

    def _encoder(self, special: bool) -> Callable[[str], Sequence[int]]:
        tok = self._tokenizer
        return lambda text: tok.encode(text, add_special_tokens=special)

    def _admit(self, key: tuple[bool, str], entry: _Entry) -> None:
        seen, h = self._seen, hash(key)  # str caches its hash: the tuple's costs one more step
        if h not in seen:
            seen[h] = None
            if len(seen) > self._cache_size:
                seen.popitem(last=False)
            return
        del seen[h]
        cache = self._cache
        cache[key] = entry
        if len(cache) > self._cache_size:
            cache.popitem(last=False)

    def _source(self, request: LLMRequest) -> tuple[str | Sequence[int], bool]:
        """The prompt's token ids when the request carries them, else the text to tokenize; and whether the
        tokenizer adds its special tokens (BOS), as vLLM does: for a completion prompt yes, for a chat rendered by
        its template no (the template writes them), unless the body's ``add_special_tokens`` says otherwise."""
        body = request.body
        flag = body.get("add_special_tokens")
        if request.token_ids is not None:
            return request.token_ids, False
        prompt = request.prompt if request.prompt is not None else read_prompt(body, request.kind)
        if request.kind == "chat":
            kwargs = body.get("chat_template_kwargs")
            variables = {str(k): v for k, v in kwargs.items() if k not in ("messages", "add_generation_prompt")
                         } if isinstance(kwargs, Mapping) else {}
            if body.get("tools") is not None:
                variables["tools"] = body["tools"]
            add_generation = body.get("add_generation_prompt", True) is not False
            text = self._tokenizer.apply_chat_template(prompt.sent, add_generation_prompt=add_generation, **variables)
            return text, flag is True
        if prompt.ids:  # a prompt given as token ids (a batch: route by the first one)
            return prompt.ids[0], False
        return prompt.texts[0], flag is not False
