"""ZMQ PUB publisher of KV events in vLLM 0.26's wire format: ``[topic, seq (8-byte big-endian), msgpack payload]``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import zmq

from llmd_kserve.errors import ConfigError
from llmd_kserve.kvcache.events import KVEvent, encode_payload, make_batch

log = logging.getLogger(__name__)


def _bind_address(endpoint: str) -> str:
    """``tcp://host:0`` means any free port (zmq spells it ``*``)."""
    return endpoint[:-2] + ":*" if endpoint.startswith("tcp://") and endpoint.endswith(":0") else endpoint


class KVEventPublisher:
    """Binds a PUB socket and sends one message per engine step; never blocks (PUB drops at the high-water mark)."""

    def __init__(self, endpoint: str, topic: str, *, data_parallel_rank: int = 0,
                 wall_clock: Callable[[], float] = time.time, ctx: zmq.Context | None = None) -> None:
        self._ctx = ctx or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 100_000)
        try:
            self._sock.bind(_bind_address(endpoint))
        except zmq.ZMQError as exc:
            self._sock.close(0)
            raise ConfigError(f"cannot bind KV-event socket {endpoint!r}: {exc.strerror} "
                              "(expected e.g. tcp://*:5557 or tcp://127.0.0.1:0)", "kv_events_endpoint") from exc
        self.bound = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.topic = topic.encode()
        self.seq = 0
        self.rank = data_parallel_rank
        self._clock = wall_clock

    @property
    def connect_endpoint(self) -> str:
        """Where a subscriber on this host connects (a wildcard bind becomes 127.0.0.1)."""
        return self.bound.replace("0.0.0.0", "127.0.0.1").replace("//*:", "//127.0.0.1:")

    def publish(self, events: Sequence[KVEvent]) -> None:
        if not events:
            return
        payload = encode_payload(make_batch(events, self._clock(), self.rank))
        try:
            self._sock.send_multipart([self.topic, self.seq.to_bytes(8, "big"), payload], flags=zmq.NOBLOCK)
        except zmq.Again:  # pragma: no cover - PUB does not raise EAGAIN, but be safe
            log.warning("KV event message %d dropped", self.seq)
        self.seq += 1

    def close(self) -> None:
        self._sock.close(linger=0)
