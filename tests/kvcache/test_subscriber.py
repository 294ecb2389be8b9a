"""KVEventSubscriber over real ZMQ PUB/SUB sockets on 127.0.0.1: golden frames, gaps, restarts, garbage."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import zmq
import zmq.asyncio

from llmd_kserve.kvcache.events import EventBatch, decode_payload, encode_payload
from llmd_kserve.kvcache.hashing import block_keys
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.kvcache.subscriber import KVEventSubscriber
from llmd_kserve.types import Endpoint, EndpointId

TOPIC = b"kv@llama-8b-shape"


async def wait_for(pred, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


class Publisher:
    def __init__(self, ctx: zmq.asyncio.Context) -> None:
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"

    async def send(self, seq: int, payload: bytes) -> None:
        await self.sock.send_multipart([TOPIC, seq.to_bytes(8, "big"), payload])

    async def sync(self, sub: KVEventSubscriber, eid: EndpointId) -> None:
        """Beat ZMQ's slow-joiner: send garbage until the subscriber has seen some (which it must count and skip)."""
        async def until_seen():
            while sub.stats()[eid].decode_errors == 0:
                await self.sock.send_multipart([b"garbage"])
                await asyncio.sleep(0.01)
        await asyncio.wait_for(until_seen(), 10)


@pytest.fixture
async def ctx():
    c = zmq.asyncio.Context()
    yield c
    c.destroy(linger=0)


async def test_golden_frames_gaps_restart_garbage(ctx, golden_frames):
    pub = Publisher(ctx)
    eid = EndpointId("http://127.0.0.1:1")
    index = KVIndex()
    async with KVEventSubscriber(index) as sub:
        assert sub.add(Endpoint(eid, kv_events=pub.address))
        await pub.sync(sub, eid)
        for topic, seq, payload in golden_frames:
            await pub.sock.send_multipart([topic, seq, payload])
        n = len(golden_frames)
        await wait_for(lambda: sub.stats()[eid].last_seq == n - 1)
        garbage = sub.stats()[eid].decode_errors  # stream is ordered: every sync frame was handled before

        expected = KVIndex()
        for _, _, payload in golden_frames:
            expected.apply(eid, decode_payload(payload))
        assert index.stats() == expected.stats()
        st = sub.stats()[eid]
        assert (st.gaps, st.missed, st.restarts, st.decode_errors) == (0, 0, 0, garbage)
        assert st.blocks == expected.stats().blocks_stored + expected.stats().blocks_removed

        empty = encode_payload(EventBatch(1.0, [], 0))
        await pub.send(n + 5, empty)  # 5 messages lost
        await wait_for(lambda: sub.stats()[eid].last_seq == n + 5)
        st = sub.stats()[eid]
        assert (st.gaps, st.missed) == (1, 5)

        await pub.send(n + 6, b"\xc1 not msgpack")  # valid seq, garbage payload: counted, seq still advances
        await pub.send(n + 7, msgspec.msgpack.encode({"nope": 1}))
        await wait_for(lambda: sub.stats()[eid].last_seq == n + 7)
        assert sub.stats()[eid].decode_errors == garbage + 2
        assert sub.stats()[eid].gaps == 1

        assert len(index) > 0
        await pub.send(0, golden_frames[0][2])  # publisher restarted: index of this endpoint rebuilt from scratch
        await wait_for(lambda: sub.stats()[eid].restarts == 1)
        assert index.stats().entries == len(decode_payload(golden_frames[0][2]).events[0].block_hashes)

        sub.remove(eid)
        assert eid not in sub and len(index) == 0
    pub.sock.close()


async def test_add_endpoints_at_runtime_and_set_endpoints(ctx, golden_frames):
    p1, p2 = Publisher(ctx), Publisher(ctx)
    e1, e2, e3 = EndpointId("http://e1"), EndpointId("http://e2"), EndpointId("http://e3")
    index = KVIndex()
    sub = KVEventSubscriber(index, context=ctx)
    assert not sub.add(Endpoint(e3))  # no kv_events address: nothing to subscribe to
    sub.add(Endpoint(e1, kv_events=p1.address))
    await sub.start()
    await p1.sync(sub, e1)
    sub.set_endpoints([Endpoint(e1, kv_events=p1.address), Endpoint(e2, kv_events=p2.address), Endpoint(e3)])
    await p2.sync(sub, e2)
    assert set(sub.stats()) == {e1, e2}
    for seq, (_, _, payload) in enumerate(golden_frames[:3]):
        await p1.send(seq, payload)
        await p2.send(seq, payload)
    await wait_for(lambda: all(s.last_seq == 2 for s in sub.stats().values()))
    first = decode_payload(golden_frames[0][2]).events[0]
    assert index.match(block_keys(first.token_ids, 16)) == {e1: 32, e2: 32}
    sub.set_endpoints([Endpoint(e2, kv_events=p2.address)])
    assert set(sub.stats()) == {e2}
    assert index.match(block_keys(first.token_ids, 16)) == {e2: 32}
    await sub.stop()
    p1.sock.close()
    p2.sock.close()


def test_handle_message_frame_shapes():
    index = KVIndex()
    sub = KVEventSubscriber(index)
    eid = EndpointId("http://x")
    sub.add(Endpoint(eid, kv_events="tcp://127.0.0.1:1"))
    empty = encode_payload(EventBatch(1.0, [], 0))
    sub.handle_message(eid, [(7).to_bytes(8, "big"), empty])  # no topic frame
    sub.handle_message(eid, [b"t", b"short", empty])  # bad seq frame
    sub.handle_message(eid, [b"t", b"a", b"b", b"c"])  # too many frames
    st = sub.stats()[eid]
    assert (st.messages, st.decode_errors, st.last_seq) == (3, 2, 7)
