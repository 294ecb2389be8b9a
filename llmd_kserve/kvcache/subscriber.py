"""Async ZMQ subscriber: one SUB socket per endpoint's KV-event publisher, feeding the KV index.

Each message is ``[topic, seq (8-byte big-endian), payload]`` (vLLM's ``ZmqEventPublisher``). Per endpoint we
count messages, sequence gaps (``seq`` jumped forward: messages were lost, e.g. past the high-water mark) and
the messages missed, publisher restarts (``seq`` went backwards: the engine restarted, so its cache is empty and
the endpoint's index entries are dropped), disconnects (the TCP connection to the publisher dropped: events may
have been missed meanwhile and the publisher may come back as a new process whose ``seq`` is *higher* than the
last one seen, so the endpoint's index is dropped and the next message starts a fresh sequence) and garbage (wrong frame count, bad ``seq``, undecodable payload: logged,
counted, skipped). Endpoints can be added and removed while running.

When an endpoint has a replay address (vLLM's ``replay_endpoint``, a ROUTER socket), a gap is repaired before the
message after it is applied: a DEALER asks ``[b"", first missed seq]``, the publisher answers ``[b"", seq, payload]``
(vLLM 0.26; 0.32 puts the topic before ``seq``) per buffered message and ``[b"", seq=-1, b""]`` at the end; the missed messages are applied in order (so a block
stored then removed in the gap does not linger), those at or past the live message are ignored. Messages no longer
buffered, or a publisher that does not answer within ``replay_timeout_s``, stay counted as missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import zmq
import zmq.asyncio

from llmd_kserve.kvcache.events import KVEventDecodeError, decode_payload
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.types import Endpoint, EndpointId

log = logging.getLogger(__name__)

_LOG_FIRST_ERRORS = 5
_END_SEQ = (-1).to_bytes(8, "big", signed=True)
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""ZMQ ``MAXMSGSIZE`` of each SUB socket: a larger message drops the connection (ZMQ reconnects), never buffered."""


@dataclass(frozen=True, slots=True)
class SubscriptionStats:
    """Counters of one endpoint's event stream."""

    address: str
    messages: int = 0
    blocks: int = 0
    gaps: int = 0
    missed: int = 0
    restarts: int = 0
    decode_errors: int = 0
    last_seq: int | None = None
    replayed: int = 0
    """Missed messages recovered from the publisher's replay socket (``missed - replayed`` stayed lost)."""
    replay_failures: int = 0
    """Replay requests that got no complete answer in time."""
    disconnects: int = 0
    connected_at: float | None = None
    """``time.monotonic()`` when the connection to the publisher was last made; None while not connected."""
    last_message_at: float | None = None
    """``time.monotonic()`` of the last message received (None: none yet)."""


class _Sub:
    __slots__ = ("address", "blocks", "connected_at", "decode_errors", "disconnects", "gaps", "last_message_at",
                 "last_seq", "loop", "messages", "missed", "monitor", "monitor_socket", "reader", "replay",
                 "replay_failures", "replay_socket", "replayed", "restarts", "socket", "task")

    def __init__(self, address: str, replay: str | None = None) -> None:
        self.address = address
        self.replay = replay
        self.messages = self.blocks = self.gaps = self.missed = self.restarts = self.decode_errors = 0
        self.replayed = self.replay_failures = 0
        self.disconnects = 0
        self.connected_at: float | None = None
        self.last_message_at: float | None = None
        self.last_seq: int | None = None
        self.socket: zmq.asyncio.Socket | None = None
        self.replay_socket: zmq.asyncio.Socket | None = None
        self.task: asyncio.Task[None] | None = None
        """A replay in progress (the socket's reader is off meanwhile)."""
        self.reader: zmq.Socket[bytes] | None = None
        """The SUB socket's synchronous shadow, read in the loop's reader callback."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.monitor: asyncio.Task[None] | None = None
        self.monitor_socket: zmq.asyncio.Socket | None = None

    def snapshot(self) -> SubscriptionStats:
        return SubscriptionStats(self.address, self.messages, self.blocks, self.gaps, self.missed, self.restarts,
                                 self.decode_errors, self.last_seq, self.replayed, self.replay_failures,
                                 self.disconnects, self.connected_at, self.last_message_at)


class KVEventSubscriber:
    """Subscribes to every endpoint's KV events and applies them to ``index``.

    ``add``/``remove`` may be called before or after :meth:`start`; endpoints without ``kv_events`` are ignored.
    """

    def __init__(self, index: KVIndex, *, context: zmq.asyncio.Context | None = None, rcvhwm: int = 100_000,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, replay_timeout_s: float = 1.0) -> None:
        self.index = index
        self._replay_timeout_ms = max(1, int(replay_timeout_s * 1000))
        self._max_message_bytes = max_message_bytes
        self._ctx = context
        self._own_ctx = context is None
        self._rcvhwm = rcvhwm
        self._subs: dict[EndpointId, _Sub] = {}
        self._running = False

    # --- endpoints -------------------------------------------------------------------------------------------------

    def add(self, endpoint: Endpoint) -> bool:
        """Subscribe to ``endpoint.kv_events``; False if it has none. Re-adding with a new address resubscribes."""
        if not endpoint.kv_events:
            return False
        sub = self._subs.get(endpoint.id)
        if sub is not None:
            if sub.address == endpoint.kv_events:
                sub.replay = endpoint.kv_replay
                return True
            self.remove(endpoint.id)
        sub = self._subs[endpoint.id] = _Sub(endpoint.kv_events, endpoint.kv_replay)
        if self._running:
            self._launch(endpoint.id, sub)
        return True

    def remove(self, endpoint_id: EndpointId) -> None:
        """Unsubscribe and drop the endpoint from the index."""
        sub = self._subs.pop(endpoint_id, None)
        if sub is not None:
            self._close(sub)
        self.index.remove_endpoint(endpoint_id)

    def set_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        """Reconcile the subscriptions with the current endpoint list."""
        wanted = {e.id: e for e in endpoints if e.kv_events}
        for eid in list(self._subs):
            if eid not in wanted:
                self.remove(eid)
        for e in wanted.values():
            self.add(e)

    # --- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._running:
            return
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context()
        self._running = True
        for eid, sub in self._subs.items():
            self._launch(eid, sub)

    async def stop(self) -> None:
        self._running = False
        tasks = [t for s in self._subs.values() for t in (s.task, s.monitor) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, zmq.ZMQError):
                await t
        for sub in self._subs.values():
            self._close(sub)
        if self._own_ctx and self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    async def __aenter__(self) -> KVEventSubscriber:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _launch(self, eid: EndpointId, sub: _Sub) -> None:
        assert self._ctx is not None
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, self._rcvhwm)
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_message_bytes)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        # the monitor before connecting: the first "connected" event is not missed
        sub.monitor_socket = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        sock.connect(sub.address)
        sub.socket = sock
        loop = sub.loop = asyncio.get_running_loop()
        sub.reader = zmq.Socket.shadow(sock.underlying)
        log.info("subscribed to KV events of %s at %s", eid, sub.address)
        self._resume(eid, sub)
        sub.monitor = loop.create_task(self._watch(eid, sub.monitor_socket), name=f"kv-events monitor {eid}")

    @staticmethod
    def _close(sub: _Sub) -> None:
        if sub.monitor is not None:
            sub.monitor.cancel()
            sub.monitor = None
        if sub.monitor_socket is not None:  # closed now: the context's term() waits for every socket
            if sub.socket is not None:
                with contextlib.suppress(zmq.ZMQError):
                    sub.socket.disable_monitor()
            sub.monitor_socket.close(linger=0)
            sub.monitor_socket = None
        if sub.task is not None:
            sub.task.cancel()
            sub.task = None
        if sub.reader is not None and sub.loop is not None and not sub.loop.is_closed():
            sub.loop.remove_reader(sub.reader.FD)
        sub.reader = None
        if sub.socket is not None:
            sub.socket.close(linger=0)
            sub.socket = None
        if sub.replay_socket is not None:
            sub.replay_socket.close(linger=0)
            sub.replay_socket = None

    # --- ingestion -------------------------------------------------------------------------------------------------

    _BATCH = 256
    """Messages read in one reader callback before the loop gets a turn (the rest: in the next callback)."""

    def _resume(self, eid: EndpointId, sub: _Sub) -> None:
        """Read the socket from the loop's reader callback; messages queued already are read at once."""
        assert sub.reader is not None and sub.loop is not None
        sub.loop.add_reader(sub.reader.FD, self._readable, eid, sub)
        sub.loop.call_soon(self._readable, eid, sub)  # ZMQ's FD is edge-triggered: it may not signal them

    def _readable(self, eid: EndpointId, sub: _Sub) -> None:
        """Apply every queued message (no task or future per message); a gap with a replay address pauses
        reading until the missed messages are recovered."""
        reader = sub.reader
        if reader is None or sub.task is not None:
            return
        for _ in range(self._BATCH):
            try:
                if not int(reader.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                    return
                frames = reader.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:  # closed under us
                return
            last = sub.last_seq
            if sub.replay and last is not None and len(frames) in (2, 3) and len(frames[-2]) == 8:
                seq = int.from_bytes(frames[-2], "big")
                if seq > last + 1:
                    assert sub.loop is not None
                    sub.loop.remove_reader(reader.FD)
                    sub.task = sub.loop.create_task(self._recover_then(eid, sub, last + 1, seq, frames),
                                                    name=f"kv-events replay {eid}")
                    return
            self._apply(eid, sub, frames)
        assert sub.loop is not None
        sub.loop.call_soon(self._readable, eid, sub)  # more queued: after the loop's other work

    def _apply(self, eid: EndpointId, sub: _Sub, frames: list[bytes]) -> None:
        try:
            self._handle(eid, sub, frames)
        except Exception:  # never let one bad message kill the subscription
            sub.decode_errors += 1
            log.exception("failed to apply KV events from %s", eid)

    async def _recover_then(self, eid: EndpointId, sub: _Sub, start: int, stop: int, frames: list[bytes]) -> None:
        try:
            await self._recover(eid, sub, start, stop)
        except Exception:
            sub.decode_errors += 1
            log.exception("failed to apply KV events from %s", eid)
        else:
            self._apply(eid, sub, frames)
        finally:
            sub.task = None
        if sub.reader is not None:
            self._resume(eid, sub)

    async def _recover(self, eid: EndpointId, sub: _Sub, start: int, stop: int) -> None:
        """Ask the publisher's replay socket for messages ``start .. stop-1`` and apply them in order."""
        assert self._ctx is not None and sub.replay is not None
        if sub.replay_socket is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, self._max_message_bytes)
            sock.connect(sub.replay)
            sub.replay_socket = sock
        sock = sub.replay_socket
        got = 0
        await sock.send_multipart([b"", start.to_bytes(8, "big")])
        while True:
            if not await sock.poll(self._replay_timeout_ms):
                sub.replay_failures += 1
                log.warning("KV-event replay from %s: no complete answer in %d ms (%d of %d recovered)", eid,
                            self._replay_timeout_ms, got, stop - start)
                sock.close(linger=0)  # a late answer must not be read as the next request's
                sub.replay_socket = None
                break
            frames = await sock.recv_multipart(copy=True)
            if len(frames) == 4:  # vLLM 0.32 adds the topic: [b"", topic, seq, payload]
                frames = [frames[0], frames[2], frames[3]]
            if len(frames) != 3 or len(frames[1]) != 8:
                self._garbage(eid, sub, f"replay message of {len(frames)} frames")
                continue
            if frames[1] == _END_SEQ:
                break
            seq = int.from_bytes(frames[1], "big")
            if not start <= seq < stop:
                continue  # before the gap, or already (or about to be) received live
            try:
                batch = decode_payload(frames[2])
            except KVEventDecodeError as exc:
                self._garbage(eid, sub, f"replayed {exc}")
                continue
            sub.blocks += self.index.apply(eid, batch)
            got += 1
        sub.replayed += got
        log.info("KV-event replay from %s: recovered %d of %d missed messages", eid, got, stop - start)
    async def _watch(self, eid: EndpointId, monitor: zmq.asyncio.Socket) -> None:
        """Connected: note when (readiness waits for it). Connection lost: drop the endpoint's index and forget
        ``last_seq`` (ZMQ reconnects by itself)."""
        while True:
            frames = await monitor.recv_multipart()
            event = int.from_bytes(frames[0][:2], "little") if frames and len(frames[0]) >= 2 else 0
            sub = self._subs.get(eid)
            if event == zmq.EVENT_CONNECTED:
                if sub is not None:
                    sub.connected_at = time.monotonic()
            elif event == zmq.EVENT_DISCONNECTED:
                self.connection_lost(eid)

    def connection_lost(self, endpoint_id: EndpointId) -> None:
        sub = self._subs.get(endpoint_id)
        if sub is None:
            return
        sub.disconnects += 1
        sub.last_seq = None
        sub.connected_at = None
        self.index.clear_endpoint(endpoint_id)
        log.warning("KV events from %s: connection lost; its index is dropped until the publisher is back",
                    endpoint_id)

    def handle_message(self, endpoint_id: EndpointId, frames: list[bytes]) -> None:
        """Process one multipart message of a subscribed endpoint synchronously (what the receive loop does)."""
        self._handle(endpoint_id, self._subs[endpoint_id], frames)

    def _handle(self, eid: EndpointId, sub: _Sub, frames: list[bytes]) -> None:
        sub.messages += 1
        sub.last_message_at = time.monotonic()
        if len(frames) == 3:
            _, seq_b, payload = frames
        elif len(frames) == 2:  # some publishers send no topic frame
            seq_b, payload = frames
        else:
            self._garbage(eid, sub, f"{len(frames)} frames")
            return
        if len(seq_b) != 8:
            self._garbage(eid, sub, f"sequence frame of {len(seq_b)} bytes")
            return
        seq = int.from_bytes(seq_b, "big")
        last = sub.last_seq
        if last is not None and seq != last + 1:
            if seq > last:
                sub.gaps += 1
                sub.missed += seq - last - 1
                log.warning("KV events from %s: gap of %d messages (%d -> %d)", eid, seq - last - 1, last, seq)
            else:
                sub.restarts += 1
                log.warning("KV events from %s: sequence restarted (%d -> %d); dropping its index", eid, last, seq)
                self.index.clear_endpoint(eid)
        sub.last_seq = seq
        try:
            batch = decode_payload(payload)
        except KVEventDecodeError as exc:
            self._garbage(eid, sub, str(exc))
            return
        sub.blocks += self.index.apply(eid, batch)

    @staticmethod
    def _garbage(eid: EndpointId, sub: _Sub, why: str) -> None:
        sub.decode_errors += 1
        n = sub.decode_errors
        if n <= _LOG_FIRST_ERRORS or (n & (n - 1)) == 0:  # the first few, then at powers of two
            log.warning("bad KV-event message from %s: %s (%d so far)", eid, why[:200], n)

    # --- introspection ---------------------------------------------------------------------------------------------

    def stats(self) -> dict[EndpointId, SubscriptionStats]:
        return {eid: sub.snapshot() for eid, sub in self._subs.items()}

    def __contains__(self, endpoint_id: object) -> bool:
        return endpoint_id in self._subs
