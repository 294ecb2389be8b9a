"""KV-event replay after a sequence gap, against the simulated engine's publisher (vLLM's replay ROUTER socket)."""

from __future__ import annotations

import asyncio

import pytest
import zmq
import zmq.asyncio

from llmd_kserve.engine_sim.publisher import END_SEQ, KVEventPublisher
from llmd_kserve.kvcache.events import BlockRemoved, BlockStored, decode_payload
from llmd_kserve.kvcache.hashing import block_keys
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.kvcache.subscriber import KVEventSubscriber
from llmd_kserve.types import Endpoint, EndpointId

BS = 4
EID = EndpointId("http://127.0.0.1:1")


class LossyPublisher(KVEventPublisher):
    """The real publisher (PUB + replay ROUTER) whose chosen sequence numbers never reach the wire: a fake of
    messages lost past a high-water mark; they are still buffered for replay, as in vLLM."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.drop: set[int] = set()

    def _send(self, seq: int, payload: bytes) -> None:
        if seq not in self.drop:
            super()._send(seq, payload)


def stored(tokens: list[int], engine_base: int) -> BlockStored:
    n = len(tokens) // BS
    return BlockStored([engine_base + i for i in range(n)], None, tokens, BS)


async def wait_for(pred, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


async def _joined(pub: KVEventPublisher, sub: KVEventSubscriber) -> None:
    """Beat ZMQ's slow joiner: publish a harmless batch until the subscriber has seen one."""
    warm = list(range(900, 900 + BS))
    while sub.stats()[EID].messages == 0:
        pub.publish([stored(warm, 9000)])
        await asyncio.sleep(0.01)


A, B, C = list(range(10, 10 + 4 * BS)), list(range(50, 50 + 4 * BS)), list(range(90, 90 + 4 * BS))


async def _gap_scenario(replay: bool, buffer_steps: int = 100) -> tuple[KVIndex, dict]:
    ctx = zmq.Context()
    pub = LossyPublisher("tcp://127.0.0.1:0", "kv@test", ctx=ctx, buffer_steps=buffer_steps,
                         replay_endpoint="tcp://127.0.0.1:0" if replay else None)
    index = KVIndex()
    try:
        async with KVEventSubscriber(index, replay_timeout_s=5.0) as sub:
            sub.add(Endpoint(EID, kv_events=pub.connect_endpoint, kv_replay=pub.replay_connect_endpoint))
            await _joined(pub, sub)
            pub.publish([stored(A, 1000)])
            first_lost = pub.seq
            pub.drop = {first_lost, first_lost + 1}
            pub.publish([stored(B, 2000)])  # lost: B stored ...
            pub.publish([BlockRemoved([1002, 1003])])  # lost: ... and A's last two blocks evicted
            pub.drop = set()
            pub.publish([stored(C, 3000)])  # live again: the subscriber sees the gap here
            await wait_for(lambda: sub.stats()[EID].last_seq == first_lost + 2)
            return index, {"stats": sub.stats()[EID], "served": pub.replays_served}
    finally:
        pub.close()
        ctx.term()


def _held(index: KVIndex, tokens: list[int]) -> int:
    return index.match(block_keys(tokens, BS), [EID]).get(EID, 0)


async def test_gap_is_repaired_from_the_replay_socket_in_order() -> None:
    index, out = await _gap_scenario(replay=True)
    st = out["stats"]
    assert (st.gaps, st.missed, st.replayed, st.replay_failures) == (1, 2, 2, 0)
    assert out["served"] == 1
    assert _held(index, B) == 4  # stored during the gap: recovered
    assert _held(index, A) == 2  # evicted during the gap: the removal was applied too
    assert _held(index, C) == 4


async def test_without_replay_the_gap_is_only_counted() -> None:
    index, out = await _gap_scenario(replay=False)
    st = out["stats"]
    assert (st.gaps, st.missed, st.replayed) == (1, 2, 0)
    assert _held(index, B) == 0 and _held(index, A) == 4  # stale: the index missed both messages


async def test_replay_buffer_shorter_than_the_gap_recovers_what_it_holds() -> None:
    index, out = await _gap_scenario(replay=True, buffer_steps=2)  # holds only the removal and the live message
    st = out["stats"]
    assert (st.missed, st.replayed) == (2, 1)
    assert _held(index, B) == 0 and _held(index, A) == 2


async def test_replay_wire_format_is_vllms() -> None:
    """A DEALER asks ``[b"", start_seq]``; the ROUTER answers ``[b"", seq, payload]`` per buffered message from
    ``start_seq`` and ``[b"", -1, b""]`` at the end (vLLM 0.26 ``ZmqEventPublisher._service_replay``)."""
    ctx = zmq.asyncio.Context()
    pub = KVEventPublisher("tcp://127.0.0.1:0", "kv@test", replay_endpoint="tcp://127.0.0.1:0", buffer_steps=3)
    try:
        for i in range(5):
            pub.publish([stored(list(range(i * BS, (i + 1) * BS)), 100 * i)])
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(pub.replay_connect_endpoint)
        await dealer.send_multipart([b"", (1).to_bytes(8, "big")])
        got = []
        while True:
            assert await dealer.poll(5000), "no replay answer"
            empty, seq_b, payload = await dealer.recv_multipart()
            assert empty == b""
            if seq_b == END_SEQ:
                assert payload == b""
                break
            got.append((int.from_bytes(seq_b, "big"), decode_payload(payload).events[0].block_hashes[0]))
        assert got == [(2, 200), (3, 300), (4, 400)]  # the buffer holds the last 3; seq 1 has been dropped
        dealer.close(0)
    finally:
        pub.close()
        ctx.destroy(0)


def test_bad_replay_bind_is_a_config_error() -> None:
    from llmd_kserve.errors import ConfigError

    with pytest.raises(ConfigError, match="replay"):
        KVEventPublisher("tcp://127.0.0.1:0", "t", replay_endpoint="tcp://256.1.1.1:1")
