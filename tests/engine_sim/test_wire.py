"""Golden-file wire tests: what the simulated engine sends is shaped exactly like vLLM 0.26's captures."""

from __future__ import annotations

import asyncio
import base64

import aiohttp
import msgspec
import pytest
import zmq
import zmq.asyncio
from prometheus_client.parser import text_string_to_metric_families

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.metrics.parse import parse_vllm_metrics
from tests.wire import golden_json, golden_text

_dec = msgspec.msgpack.Decoder()


def shape(v, path: str = ""):
    """Keys (in order) and leaf types, recursively; None leaves match anything (vLLM writes null for unset)."""
    if isinstance(v, dict):
        return {k: shape(x, f"{path}.{k}") for k, x in v.items()}
    if isinstance(v, list):
        return [shape(v[0], path)] if v else []
    return type(v).__name__


def assert_same_shape(ours, golden, path="$", lenient=()):
    if path in lenient or golden is None or ours is None:
        return
    if isinstance(golden, dict):
        assert isinstance(ours, dict), path
        assert list(ours) == list(golden), f"{path}: keys {list(ours)} != {list(golden)}"
        for k in golden:
            assert_same_shape(ours[k], golden[k], f"{path}.{k}", lenient)
    elif isinstance(golden, list):
        assert isinstance(ours, list), path
        if ours and golden:
            assert_same_shape(ours[0], golden[0], f"{path}[]", lenient)
    else:
        num = (int, float)
        same = type(ours) is type(golden) or (isinstance(ours, num) and isinstance(golden, num)
                                              and not isinstance(ours, bool) and not isinstance(golden, bool))
        assert same, f"{path}: {type(ours).__name__} != {type(golden).__name__}"


def golden_frames():
    return [[base64.b64decode(p) for p in f] for f in golden_json("kv_events_sample.json")["frames_b64"]]


async def _recv_all(sock, timeout=0.5):
    out = []
    while True:
        try:
            out.append(await asyncio.wait_for(sock.recv_multipart(), timeout))
        except TimeoutError:
            return out


async def test_kv_event_frames_match_vllm():
    g_first, g_last = golden_frames()
    g_events = {}
    for frame in (g_first, g_last):
        for ev in _dec.decode(frame[2])[1]:
            g_events.setdefault(ev["type"], ev)
    ctx = zmq.asyncio.Context()
    async with running_engine(kv_events_endpoint="tcp://127.0.0.1:0", num_blocks=40, time_scale=0.0,
                              kv_events_topic="kv@llama-8b-shape") as eng:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(eng.kv_events_endpoint)
        await asyncio.sleep(0.2)  # slow joiner
        async with aiohttp.ClientSession() as s:
            for i in range(3):  # 3 x 320 prompt tokens on 40 blocks: the third evicts the first
                body = {"prompt": list(range(100 * (i + 1), 100 * (i + 1) + 320)), "max_tokens": 2}
                async with s.post(eng.url + "/v1/completions", json=body) as r:
                    assert r.status == 200
            async with s.post(eng.url + "/reset_prefix_cache") as r:
                assert r.status == 200
        frames = await _recv_all(sub)
        sub.close(0)
    ctx.term()
    assert frames
    seqs = [int.from_bytes(f[1], "big") for f in frames]
    assert seqs == list(range(len(frames)))
    events = {}
    for topic, seq, payload in frames:
        assert topic == g_first[0] and len(seq) == 8
        batch = _dec.decode(payload)
        g_batch = _dec.decode(g_first[2])
        assert isinstance(batch, list) and len(batch) == 3
        assert type(batch[0]) is float and type(batch[2]) is type(g_batch[2]) is int
        for ev in batch[1]:
            events.setdefault(ev["type"], ev)
    assert set(events) == {"BlockStored", "BlockRemoved", "AllBlocksCleared"}
    for kind in ("BlockStored", "BlockRemoved"):
        assert_same_shape(events[kind], g_events[kind], lenient=("$.parent_block_hash",))
    first = _dec.decode(frames[0][2])[1][0]
    assert first["parent_block_hash"] is None and len(first["token_ids"]) == 16 * len(first["block_hashes"])
    assert all(0 <= h < 2**64 for h in first["block_hashes"])
    assert events["AllBlocksCleared"] == {"type": "AllBlocksCleared"}


REQUIRED = {
    "vllm:num_requests_running": "gauge", "vllm:num_requests_waiting": "gauge", "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prefix_cache_queries": "counter", "vllm:prefix_cache_hits": "counter", "vllm:cache_config_info": "gauge",
    "vllm:num_preemptions": "counter", "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram", "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram", "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
}


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_metrics_names_types_and_buckets_match_vllm():
    golden = _families(golden_text("vllm_metrics_after_load.txt"))
    async with running_engine(time_scale=0.0) as eng, aiohttp.ClientSession() as s:
        for _ in range(2):
            async with s.post(eng.url + "/v1/completions", json={"prompt": [7] * 100, "max_tokens": 3}) as r:
                assert r.status == 200
        async with s.get(eng.url + "/metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
    ours = _families(text)
    for name, kind in REQUIRED.items():
        assert golden[name].type == kind, name
        assert ours[name].type == kind, name
    for name, fam in ours.items():
        if name.startswith("vllm:") and name in golden:
            assert fam.type == golden[name].type, name
            if fam.type == "histogram":
                les = [s.labels["le"] for s in fam.samples if s.name.endswith("_bucket")]
                g_les = [s.labels["le"] for s in golden[name].samples if s.name.endswith("_bucket")]
                assert les == g_les, name
            assert set(fam.samples[0].labels) <= {k for x in golden[name].samples for k in x.labels}, name
    info = ours["vllm:cache_config_info"].samples[0].labels
    assert info["block_size"] == "16" and info["num_gpu_blocks"] == "26962"
    hits = ours["vllm:prefix_cache_hits"].samples[0].value
    assert hits == 96  # the second identical 100-token prompt hit 6 blocks
    m = parse_vllm_metrics(text, now=1.0)
    assert m.block_size == 16 and m.num_gpu_blocks == 26962 and m.prefix_hits == 96 and m.running == 0


async def test_response_bodies_match_vllm():
    async with running_engine(time_scale=0.0) as eng, aiohttp.ClientSession() as s:
        async def post(path, body):
            async with s.post(eng.url + path, json=body) as r:
                return r.status, await r.json()

        st, body = await post("/v1/completions", {"model": "llama-8b-shape", "prompt": "hi", "max_tokens": 1})
        assert st == 200
        assert_same_shape(body, golden_json("kvtp_no_connector.json"), lenient=("$.usage.prompt_tokens_details",))
        st, body = await post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                       "max_tokens": 5})
        assert st == 200 and body["usage"]["completion_tokens"] == 5
        assert_same_shape(body, golden_json("chat_completion.json"), lenient=("$.usage.prompt_tokens_details",))
        st, body = await post("/tokenize", {"model": "llama-8b-shape", "prompt": "Hello there friend"})
        assert_same_shape(body, golden_json("tokenize.json"))
        st, det = await post("/detokenize", {"tokens": body["tokens"]})
        assert st == 200 and isinstance(det["prompt"], str)
        st, body = await post("/v1/completions/render", {"prompt": "hello", "max_tokens": 3})
        assert_same_shape(body, golden_json("completions_render.json"), lenient=("$[].sampling_params",))
        assert set(golden_json("completions_render.json")[0]["sampling_params"]) <= set(body[0]["sampling_params"])
        st, body = await post("/v1/chat/completions/render", {"messages": [{"role": "user", "content": "x"}]})
        assert_same_shape(body, golden_json("chat_render.json"))
        st, body = await post("/v1/completions", {"prompt": "x", "max_tokens": 99999})
        assert st == 400 and body == golden_json("error_too_long.json")
        async with s.get(eng.url + "/v1/models") as r:
            assert_same_shape(await r.json(), golden_json("models.json"))
        async with s.get(eng.url + "/health") as r:
            assert r.status == 200


def _sse_chunks(text: str) -> list:
    assert text.endswith("data: [DONE]\n\n")
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    return [msgspec.json.decode(e[6:]) for e in events[:-1]]


async def test_sse_stream_matches_vllm():
    golden = _sse_chunks(golden_text("completions_stream.sse"))
    async with running_engine(time_scale=0.0) as eng, aiohttp.ClientSession() as s:
        body = {"prompt": "hi there", "max_tokens": 5, "stream": True, "stream_options": {"include_usage": True}}
        async with s.post(eng.url + "/v1/completions", json=body) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            ours = _sse_chunks(await r.text())
    assert len(ours) == len(golden) == 6
    for o, g in zip(ours, golden, strict=True):
        assert_same_shape(o, g, lenient=("$.usage",))
    assert [c["choices"][0]["finish_reason"] for c in ours[:-1]] == [None] * 4 + ["length"]
    assert ours[-1]["choices"] == [] and ours[-1]["usage"]["completion_tokens"] == 5
    assert list(ours[-1]["usage"])[:3] == list(golden[-1]["usage"])


@pytest.mark.parametrize(("body", "status", "param"), [
    (b"{not json", 400, None),
    ({"model": "other", "prompt": "x"}, 404, "model"),
    ({"prompt": "x", "max_tokens": "ten"}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": 16384}, 400, "max_tokens"),
    ({"prompt": 5}, 400, "prompt"),
    ({"prompt": []}, 400, "prompt"),
    ({"prompt": [1, 2, 99999]}, 400, "prompt"),
    ({"prompt": "x", "n": 2}, 400, "n"),
    ({"prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ({"prompt": [5] * 16384}, 400, "input_tokens"),
])
async def test_invalid_input_gets_vllm_error_body(body, status, param):
    async with running_engine(time_scale=0.0) as eng, aiohttp.ClientSession() as s:
        kw = {"data": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, bytes) \
            else {"json": body}
        async with s.post(eng.url + "/v1/completions", **kw) as r:
            assert r.status == status
            err = (await r.json())["error"]
    assert list(err) == ["message", "type", "param", "code"]
    assert err["code"] == status and err["param"] == param
    assert err["type"] == ("BadRequestError" if status == 400 else "NotFoundError")
