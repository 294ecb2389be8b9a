"""P/D handshake between two engines, lease expiry fallback, and failure injection."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from llmd_kserve.engine_sim.server import running_engine

PD_REQUEST = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
              "remote_block_ids": None, "remote_host": None, "remote_port": None}


async def _post(s, url, body, headers=None):
    async with s.post(url + "/v1/completions", json=body, headers=headers) as r:
        return r.status, await r.json()


async def _metric(s, url, name) -> float:
    async with s.get(url + "/metrics") as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_prefill_decode_handshake():
    prompt = list(range(100, 400))
    async with running_engine(time_scale=0.0, role="prefill") as pre, \
            running_engine(time_scale=0.0, role="decode") as dec, aiohttp.ClientSession() as s:
        hdr = {"x-request-id": "req-1"}
        st, body = await _post(s, pre.url, {"prompt": prompt, "max_tokens": 1, "stream": False,
                                            "kv_transfer_params": PD_REQUEST}, hdr)
        assert st == 200
        kvtp = body["kv_transfer_params"]
        assert list(kvtp) == ["do_remote_prefill", "do_remote_decode", "remote_block_ids", "remote_engine_id",
                              "remote_request_id", "remote_host", "remote_port", "tp_size"]
        assert kvtp["do_remote_prefill"] is True and kvtp["do_remote_decode"] is False
        assert len(kvtp["remote_block_ids"]) == 19 and kvtp["remote_port"] == pre.port
        assert pre.core.kv_usage > 0 and pre.core.held  # blocks held for the decode side
        st, out = await _post(s, dec.url, {"prompt": prompt, "max_tokens": 8, "ignore_eos": True,
                                           "kv_transfer_params": kvtp}, hdr)
        assert st == 200 and out["usage"]["completion_tokens"] == 8 and out["kv_transfer_params"] is None
        assert not pre.core.held and pre.core.kv_usage == 0  # pulled: the prefill engine freed them
        st_ = dec.core.stats  # no local prefill, only the last token's step; vLLM counts the whole prompt
        assert (st_.prefill_tokens_run, st_.prompt_tokens_computed, st_.prompt_tokens_external) == (1, 1, 299)
        assert st_.prompt_tokens == 300
        assert await _metric(s, dec.url, "vllm:nixl_xfer_time_seconds_count") == 1
        # the same params again: already pulled -> unknown -> local prefill, counted
        st, out = await _post(s, dec.url, {"prompt": prompt, "max_tokens": 2, "kv_transfer_params": kvtp})
        assert st == 200 and out["usage"]["completion_tokens"] == 2
        assert await _metric(s, dec.url, "vllm:nixl_num_failed_transfers_total") == 1


async def test_expired_lease_falls_back_to_local_prefill():
    prompt = list(range(500, 700))
    async with running_engine(time_scale=1.0, kv_lease_s=0.05) as pre, running_engine(time_scale=0.0) as dec, \
            aiohttp.ClientSession() as s:
        st, body = await _post(s, pre.url, {"prompt": prompt, "max_tokens": 1, "kv_transfer_params": PD_REQUEST})
        kvtp = body["kv_transfer_params"]
        while pre.core.held:
            await asyncio.sleep(0.02)
        assert pre.core.kv_usage == 0
        st, out = await _post(s, dec.url, {"prompt": prompt, "max_tokens": 3, "kv_transfer_params": kvtp})
        assert st == 200 and dec.core.stats.prefill_tokens_run == 200  # recomputed locally
        assert dec.metrics.failed_transfers == 1


async def test_error_rate_injection():
    async with running_engine(time_scale=0.0, error_rate=1.0) as eng, aiohttp.ClientSession() as s:
        st, body = await _post(s, eng.url, {"prompt": "x", "max_tokens": 1})
        assert st == 500 and body["error"]["code"] == 500


async def test_partial_error_rate_is_seeded():
    async def statuses(seed):
        async with running_engine(time_scale=0.0, error_rate=0.5, seed=seed) as eng, aiohttp.ClientSession() as s:
            return [(await _post(s, eng.url, {"prompt": "x", "max_tokens": 1}))[0] for _ in range(20)]

    a = await statuses(1)
    assert a == await statuses(1) and {200, 500} == set(a)


async def test_crash_after_n_requests():
    async with running_engine(time_scale=0.0, crash_after=2) as eng, aiohttp.ClientSession() as s:
        for _ in range(2):
            assert (await _post(s, eng.url, {"prompt": "x", "max_tokens": 1}))[0] == 200
        with pytest.raises(aiohttp.ClientError):
            await _post(s, eng.url, {"prompt": "x", "max_tokens": 1})
        await asyncio.sleep(0.05)
        with pytest.raises(aiohttp.ClientError):
            await _post(s, eng.url, {"prompt": "x", "max_tokens": 1})
        assert eng.crashed


async def test_slow_start_health():
    async with running_engine(time_scale=0.0, slow_start=0.3) as eng, aiohttp.ClientSession() as s:
        async with s.get(eng.url + "/health") as r:
            assert r.status == 503
        st, _body = await _post(s, eng.url, {"prompt": "x", "max_tokens": 1})
        assert st == 503
        for _ in range(100):
            async with s.get(eng.url + "/health") as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.05)
        assert r.status == 200
        assert (await _post(s, eng.url, {"prompt": "x", "max_tokens": 1}))[0] == 200
