"""Each endpoint's KV block size, learnt from the engine: the router keys a prompt in it to match that engine's blocks.

Sources, first that knows wins: the router's ``--block-size`` (an override for every endpoint), the ``block_size``
of the endpoint's KV events (what its index entries are keyed in), the ``block_size`` label of its
``vllm:cache_config_info`` metric. Until one of them is seen the size is unknown: :meth:`EngineBlockSizes.get`
answers None (the scheduler then keys the prompt in its default size, which matches nothing of that endpoint's
KV events), and that is logged once per endpoint, as is an override that contradicts what the engine reports.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from llmd_kserve.types import EndpointId, EndpointState

if TYPE_CHECKING:
    from llmd_kserve.kvcache.index import KVIndex

log = logging.getLogger(__name__)

Source = Literal["flag", "kv-events", "metrics"]


class EngineBlockSizes:
    """``get(endpoint_state)``: the endpoint's block size, or None while unknown (a ``PluginContext.block_size_of``)."""

    def __init__(self, override: int | None = None, index: KVIndex | None = None) -> None:
        if override is not None and override < 1:
            raise ValueError("override must be >= 1")
        self.override = override
        self._index = index
        self._said: dict[EndpointId, int | None] = {}  # the engine's size when last logged, per endpoint

    def get(self, endpoint: EndpointState) -> int | None:
        eid = endpoint.endpoint.id
        reported = self._index.block_size(eid) if self._index is not None else None
        if reported is None:
            reported = endpoint.metrics.block_size or None
        if self._said.get(eid, 0) != reported:  # changed since last said (0: never said)
            self._said[eid] = reported
            self._say(eid, self.override if self.override is not None else reported, *self.reported(endpoint))
        return self.override if self.override is not None else reported

    __call__ = get

    def reported(self, endpoint: EndpointState) -> tuple[int | None, Source | None]:
        """What the engine itself says: (block size, source), (None, None) before its first KV event or scrape."""
        from_events = self._index.block_size(endpoint.endpoint.id) if self._index is not None else None
        if from_events is not None:
            return from_events, "kv-events"
        if endpoint.metrics.block_size:
            return endpoint.metrics.block_size, "metrics"
        return None, None

    def describe(self, endpoint: EndpointState) -> dict[str, object]:
        """For a debug page: the size in use, where it comes from, and what the engine reports."""
        reported, source = self.reported(endpoint)
        if self.override is not None:
            return {"block_size": self.override, "source": "flag", "engine_block_size": reported}
        return {"block_size": reported, "source": source, "engine_block_size": reported}

    def forget(self, endpoint_id: EndpointId) -> None:
        """Drop what was logged about an endpoint (removed from the pool)."""
        self._said.pop(endpoint_id, None)

    def _say(self, eid: EndpointId, size: int | None, reported: int | None, source: Source | None) -> None:
        if size is None:
            log.warning("KV block size of %s is not known yet (no vllm:cache_config_info scraped, no KV event "
                        "received): its cached prefix cannot be matched until it is (or set --block-size)", eid)
        elif reported is not None and reported != size:
            log.warning("--block-size %d overrides %s's own block size %d (from its %s): prompts keyed in blocks "
                        "of %d will not match its blocks of %d", size, eid, reported, source, size, reported)
        elif reported is not None:
            log.info("KV block size of %s: %d (from its %s)", eid, size, source)
