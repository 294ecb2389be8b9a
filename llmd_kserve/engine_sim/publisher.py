"""ZMQ PUB publisher of KV events in vLLM 0.26's wire format: ``[topic, seq (8-byte big-endian), msgpack payload]``,
with vLLM's optional replay socket (a ROUTER that resends buffered messages from a requested sequence number)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import zmq

from llmd_kserve.errors import ConfigError
from llmd_kserve.kvcache.events import KVEvent, encode_payload, make_batch

log = logging.getLogger(__name__)

END_SEQ = (-1).to_bytes(8, "big", signed=True)
"""The sequence frame of the replay's end marker (``[seq=-1, b""]``), as vLLM's ``ZmqEventPublisher.END_SEQ``."""


def _bind_address(endpoint: str) -> str:
    """``tcp://host:0`` means any free port (zmq spells it ``*``)."""
    return endpoint[:-2] + ":*" if endpoint.startswith("tcp://") and endpoint.endswith(":0") else endpoint


def _connectable(bound: str) -> str:
    return bound.replace("0.0.0.0", "127.0.0.1").replace("//*:", "//127.0.0.1:")


def _bind(sock: zmq.Socket[bytes], endpoint: str, what: str, path: str) -> str:
    try:
        sock.bind(_bind_address(endpoint))
    except zmq.ZMQError as exc:
        sock.close(0)
        raise ConfigError(f"cannot bind KV-event {what} socket {endpoint!r}: {exc.strerror} "
                          "(expected e.g. tcp://*:5557 or tcp://127.0.0.1:0)", path) from exc
    return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))


class KVEventPublisher:
    """Binds a PUB socket and sends one message per engine step; never blocks (PUB drops at the high-water mark).

    With ``replay_endpoint`` (vLLM's ``KVEventsConfig.replay_endpoint``) it also keeps the last ``buffer_steps``
    messages and binds a ROUTER socket served by a background thread: a request ``[identity, b"", start_seq]``
    is answered with ``[identity, b"", seq, payload]`` for every buffered ``seq >= start_seq``, then the end
    marker ``[identity, b"", END_SEQ, b""]`` — what vLLM 0.26's ``ZmqEventPublisher._service_replay`` sends.
    """

    def __init__(self, endpoint: str, topic: str, *, data_parallel_rank: int = 0,
                 wall_clock: Callable[[], float] = time.time, ctx: zmq.Context | None = None,
                 replay_endpoint: str | None = None, buffer_steps: int = 10_000) -> None:
        self._ctx = ctx or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 100_000)
        self.bound = _bind(self._sock, endpoint, "events", "kv_events_endpoint")
        self.topic = topic.encode()
        self.seq = 0
        self.rank = data_parallel_rank
        self._clock = wall_clock
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=max(1, buffer_steps))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._replay_thread: threading.Thread | None = None
        self.replay_bound: str | None = None
        self.replays_served = 0
        if replay_endpoint:
            replay = self._ctx.socket(zmq.ROUTER)
            replay.setsockopt(zmq.LINGER, 0)
            try:
                self.replay_bound = _bind(replay, replay_endpoint, "replay", "kv_events_replay_endpoint")
            except ConfigError:
                self._sock.close(linger=0)
                raise
            self._replay_thread = threading.Thread(target=self._serve_replay, args=(replay,), daemon=True,
                                                   name="kv-events-replay")
            self._replay_thread.start()

    @property
    def connect_endpoint(self) -> str:
        """Where a subscriber on this host connects (a wildcard bind becomes 127.0.0.1)."""
        return _connectable(self.bound)

    @property
    def replay_connect_endpoint(self) -> str | None:
        """Where a subscriber on this host asks for a replay (None: no replay socket)."""
        return _connectable(self.replay_bound) if self.replay_bound else None

    def publish(self, events: Sequence[KVEvent]) -> None:
        if not events:
            return
        payload = encode_payload(make_batch(events, self._clock(), self.rank))
        self._send(self.seq, payload)
        if self._replay_thread is not None:
            with self._lock:
                self._buffer.append((self.seq, payload))
        self.seq += 1

    def _send(self, seq: int, payload: bytes) -> None:
        try:
            self._sock.send_multipart([self.topic, seq.to_bytes(8, "big"), payload], flags=zmq.NOBLOCK)
        except zmq.Again:  # pragma: no cover - PUB does not raise EAGAIN, but be safe
            log.warning("KV event message %d dropped", seq)

    def replay_from(self, start_seq: int) -> list[tuple[int, bytes]]:
        """The buffered messages with ``seq >= start_seq`` (what one replay request is answered with)."""
        with self._lock:
            return [(seq, payload) for seq, payload in self._buffer if seq >= start_seq]

    def _serve_replay(self, sock: zmq.Socket[bytes]) -> None:
        try:
            while not self._stop.is_set():
                if not sock.poll(50):
                    continue
                frames = sock.recv_multipart()
                if len(frames) != 3 or len(frames[2]) != 8:
                    log.warning("invalid KV-event replay request (%d frames)", len(frames))
                    continue
                client, _, start = frames
                for seq, payload in self.replay_from(int.from_bytes(start, "big")):
                    sock.send_multipart([client, b"", seq.to_bytes(8, "big"), payload])
                sock.send_multipart([client, b"", END_SEQ, b""])
                self.replays_served += 1
        except zmq.ZMQError as exc:  # pragma: no cover - the context was terminated under us
            log.debug("KV-event replay socket closed: %s", exc)
        finally:
            sock.close(linger=0)

    def close(self) -> None:
        self._stop.set()
        if self._replay_thread is not None:
            self._replay_thread.join(timeout=2.0)
            self._replay_thread = None
        self._sock.close(linger=0)
