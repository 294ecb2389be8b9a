"""A real vLLM 0.32 engine's KV events (``tests/golden/vllm-0.32``) through the router's decoder, index and subscriber.

The engine keys blocks of 32 tokens; a prompt matches them only when the router keys it in blocks of 32 too: the
index learns that size from the events, and a prompt keyed in the old fixed 16 matches nothing.
"""

from __future__ import annotations

import asyncio
import base64

import pytest
import zmq
import zmq.asyncio

from llmd_kserve.kvcache.events import AllBlocksCleared, BlockRemoved, BlockStored, decode_payload
from llmd_kserve.kvcache.hashing import block_keys
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.kvcache.subscriber import KVEventSubscriber
from llmd_kserve.types import Endpoint, EndpointId
from tests.wire import golden032_json, kv_event_frames_032

EP = EndpointId("http://127.0.0.1:18100")


def _batches():
    return [decode_payload(frame[2]) for frame in kv_event_frames_032()]


def test_every_frame_decodes_with_the_three_event_kinds_and_blocks_of_32():
    frames = kv_event_frames_032()
    assert [int.from_bytes(f[1], "big") for f in frames] == list(range(len(frames)))  # no gap in the capture
    kinds: dict[str, int] = {}
    for batch in _batches():
        assert batch.data_parallel_rank == 0
        for ev in batch.events:
            kinds[type(ev).__name__] = kinds.get(type(ev).__name__, 0) + 1
            if isinstance(ev, BlockStored):
                assert ev.block_size == 32 and len(ev.token_ids) == 32 * len(ev.block_hashes)
                assert ev.kv_cache_spec_kind == "full_attention" and ev.medium == "GPU"
            if isinstance(ev, BlockRemoved):
                assert len(ev.block_hashes) == 1  # 0.32 sends one BlockRemoved per evicted block
    assert kinds == {"BlockStored": 19, "BlockRemoved": 182, "AllBlocksCleared": 1}
    assert any(h >= 1 << 63 for b in _batches() for ev in b.events if isinstance(ev, BlockStored)
               for h in ev.block_hashes)  # unsigned 64-bit hashes


def test_the_index_learns_the_block_size_and_prompts_match_only_when_keyed_in_it():
    index = KVIndex()
    batches = _batches()
    assert index.block_size(EP) is None
    index.apply(EP, batches[0])  # the completion prompt of requests.json
    index.apply(EP, batches[1])  # the chat
    assert index.block_size(EP) == 32
    prompt = golden032_json("tokenize.json")["tokens"]  # 467 ids: 14 full blocks of 32
    chat = golden032_json("chat_render.json")["token_ids"]  # 329 ids: 10 full blocks
    assert index.match(block_keys(prompt, 32), [EP])[EP] == 14
    assert index.match(block_keys(chat, 32), [EP])[EP] == 10
    assert index.match(block_keys(prompt, 16), [EP])[EP] == 0  # a fixed 16 is cache-blind against this engine
    assert index.match(block_keys(prompt[1:], 32), [EP])[EP] == 0  # without the BOS the engine adds: no match


def test_evictions_and_the_reset_leave_the_index_as_the_engine_is():
    index = KVIndex()
    batches = _batches()
    for batch in batches:
        index.apply(EP, batch)
    st = index.stats()
    assert st.unknown_parents == 0 and st.mismatched == 0 and st.clears == 1
    assert st.blocks_removed == 182
    last = batches[-1].events
    assert isinstance(last[0], AllBlocksCleared) and isinstance(last[1], BlockStored)
    assert len(index) == 1 and index.match(block_keys(last[1].token_ids, 32), [EP])[EP] == 1


def test_replay_answers_decode_and_end_with_seq_minus_one():
    sample = golden032_json("kv_replay_sample.json")
    frames = [[base64.b64decode(p) for p in f] for f in sample["frames_b64"]]
    assert sample["total"] == 20  # 19 buffered messages and the end marker
    for i, (empty, topic, seq, payload) in enumerate(frames[:-1]):  # 0.32 puts the topic before seq (0.26 did not)
        assert empty == b"" and topic == b"kv" and int.from_bytes(seq, "big") == i
        assert decode_payload(payload).events
    assert frames[-1] == [b"", b"", (-1).to_bytes(8, "big", signed=True), b""]


@pytest.fixture
async def ctx():
    c = zmq.asyncio.Context()
    yield c
    c.term()


async def test_the_subscriber_applies_the_real_stream(ctx):
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    index = KVIndex()
    sub = KVEventSubscriber(index, context=ctx)
    sub.add(Endpoint(EP, kv_events=f"tcp://127.0.0.1:{port}"))
    frames = kv_event_frames_032()
    try:
        await sub.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while sub.stats()[EP].messages == 0:  # PUB drops messages until the SUB has joined: resend the first
            assert loop.time() < deadline
            await pub.send_multipart(list(frames[0]))
            await asyncio.sleep(0.05)
        first = sub.stats()[EP].messages
        for frame in frames[1:]:
            await pub.send_multipart(list(frame))
        while sub.stats()[EP].messages < first + len(frames) - 1:
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
        stats = sub.stats()[EP]
        assert stats.decode_errors == 0 and stats.gaps == 0 and stats.last_seq == len(frames) - 1
        assert index.block_size(EP) == 32 and index.stats().clears == 1 and len(index) == 1
    finally:
        await sub.stop()
        pub.close(linger=0)


async def test_a_gap_is_repaired_from_a_replay_socket_answering_as_vllm_032(ctx):
    """0.32's replay ROUTER answers ``[b"", topic, seq, payload]`` per message (0.26: no topic) and
    ``[b"", b"", seq -1, b""]`` at the end; the subscriber recovers the missed messages from either layout."""
    frames = kv_event_frames_032()
    pub, router = ctx.socket(zmq.PUB), ctx.socket(zmq.ROUTER)
    for s in (pub, router):
        s.setsockopt(zmq.LINGER, 0)
    pub_port, replay_port = pub.bind_to_random_port("tcp://127.0.0.1"), router.bind_to_random_port("tcp://127.0.0.1")
    asked: list[int] = []

    async def serve_replay() -> None:
        client, empty, start = await router.recv_multipart()
        asked.append(int.from_bytes(start, "big"))
        for topic, seq, payload in frames:
            if int.from_bytes(seq, "big") >= asked[-1]:
                await router.send_multipart([client, empty, topic, seq, payload])
        await router.send_multipart([client, empty, b"", (-1).to_bytes(8, "big", signed=True), b""])

    index = KVIndex()
    sub = KVEventSubscriber(index, context=ctx, replay_timeout_s=5.0)
    sub.add(Endpoint(EP, kv_events=f"tcp://127.0.0.1:{pub_port}", kv_replay=f"tcp://127.0.0.1:{replay_port}"))
    replay_task = asyncio.get_running_loop().create_task(serve_replay())
    try:
        await sub.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while sub.stats()[EP].messages == 0:
            assert loop.time() < deadline
            await pub.send_multipart(list(frames[0]))
            await asyncio.sleep(0.05)
        await pub.send_multipart(list(frames[3]))  # 1 and 2 never sent: a gap
        while sub.stats()[EP].last_seq != 3:
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
        stats = sub.stats()[EP]
        assert asked == [1] and stats.gaps == 1 and stats.missed == 2 and stats.replayed == 2
        assert stats.decode_errors == 0 and stats.replay_failures == 0
        want = KVIndex()
        for frame in frames[:4]:
            want.apply(EP, decode_payload(frame[2]))
        assert set(index._keys) == set(want._keys) and len(index) == len(want)
    finally:
        replay_task.cancel()
        await sub.stop()
        pub.close(linger=0)
        router.close(linger=0)
