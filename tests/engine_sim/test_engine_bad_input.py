"""Bad input at the simulated engine: OpenAI-shaped JSON errors; bad options fail early with ConfigError."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.errors import ConfigError

MODEL = "llama-8b-shape"


def _assert_openai_error(body: dict, status: int) -> None:
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == status and err["message"]


@pytest.mark.parametrize("method, path, status", [("GET", "/v1/completions", 405), ("GET", "/nope", 404),
                                                  ("PUT", "/tokenize", 405)])
async def test_unknown_routes_and_methods_are_json(method, path, status):
    async with running_engine(port=0, model=MODEL, time_scale=0.0) as eng, aiohttp.ClientSession() as s, \
            s.request(method, eng.url + path) as r:
        assert r.status == status
        assert r.content_type == "application/json"
        _assert_openai_error(await r.json(), status)


async def test_oversized_body_is_json_413():
    async with running_engine(port=0, model=MODEL, time_scale=0.0) as eng, aiohttp.ClientSession() as s, \
            s.post(eng.url + "/v1/completions", data=b"x" * (64 * 1024 * 1024 + 1)) as r:
        assert r.status == 413
        _assert_openai_error(await r.json(), 413)


async def test_client_disconnect_aborts_a_non_streaming_request():
    async with running_engine(port=0, model=MODEL, time_scale=1.0) as eng, aiohttp.ClientSession() as s:
        body = {"model": MODEL, "prompt": "hello", "max_tokens": 4000, "ignore_eos": True}
        with pytest.raises(TimeoutError):
            async with s.post(eng.url + "/v1/completions", json=body, timeout=aiohttp.ClientTimeout(total=0.2)) as r:
                await r.read()


        for _ in range(500):
            if eng.core.num_running == 0 and eng.core.num_waiting == 0:
                break
            await asyncio.sleep(0.01)
        assert eng.core.num_running == 0 and eng.core.num_waiting == 0


@pytest.mark.parametrize("opts, field", [({"num_blocks": -5}, "num_blocks"), ({"num_blocks": 1}, "num_blocks"),
                                         ({"block_size": 0}, "block_size"),
                                         ({"max_num_seqs": 0}, "max_num_seqs"), ({"error_rate": 2.0}, "error_rate"),
                                         ({"time_scale": -1.0}, "time_scale"), ({"port": 99999}, "port"),
                                         ({"kv_link_gbps": 0.0}, "kv_link_gbps"),
                                         ({"kv_events_endpoint": "garbage"}, "kv_events_endpoint")])
async def test_bad_options_raise_config_error(opts, field):
    with pytest.raises(ConfigError) as exc:
        async with running_engine(**opts):
            pass
    assert exc.value.path == field


async def test_port_in_use_is_a_config_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot listen") as exc:
            async with running_engine(port=port, host="127.0.0.1"):
                pass
        assert exc.value.path == "port"


async def test_async_scheduling_and_vllm_rules_follow_the_profile_unless_given():
    """``llmd-kserve engine --[no-]async-scheduling`` mirrors vLLM's flag and ``--vllm-version`` picks the rules;
    without them the profile's apply (the H100 profile: vLLM 0.26 with async scheduling; ``cpu-tiny-llama``: vLLM 0.32
    on CPU, without)."""
    from llmd_kserve.cli import build_parser

    parser = build_parser()
    default = parser.parse_args(["engine"])
    assert default.async_scheduling is None and default.vllm_version is None
    assert parser.parse_args(["engine", "--no-async-scheduling"]).async_scheduling is False
    assert parser.parse_args(["engine", "--vllm-version", "0.32"]).vllm_version == "0.32"
    async with running_engine(async_scheduling=False) as eng:
        assert eng.core.async_scheduling is False
    async with running_engine() as eng:
        assert (eng.core.async_scheduling, eng.core.vllm_version) == (True, "0.26")
    async with running_engine(profile="cpu-tiny-llama") as eng:
        assert (eng.core.async_scheduling, eng.core.vllm_version) == (False, "0.32")
