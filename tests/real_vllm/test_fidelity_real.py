"""The simulator checked against real vLLM: the same requests, at the same times, routed the same way (client-side
round-robin) to the two real CPU replicas and to two simulated engine cores of the ``cpu-tiny-llama`` profile with
the replicas' own KV block count; the engines' prefix-cache counters must give the same hit rate.

The cell is one of KV pressure: 16 prefix groups of 1,024 tokens, three questions each, shuffled; round-robin sends
every group to both replicas, so each sees about 16 x 34 blocks, more than its 511 usable ones, and what hits depends
on which blocks the cache kept (LRU eviction of free blocks, blocks cacheable once computed). Arrivals are evenly
spaced and slow enough that requests rarely overlap, so the hit rate depends on the rules, not on timing.
"""

from __future__ import annotations

import asyncio
import sys
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from llmd_kserve.bench.workloads import SharedPrefixSpec
from tests.real_vllm.conftest import RealStack

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import fidelity  # noqa: E402
from fidelity_run import run_http, run_virtual, token_prompts  # noqa: E402

pytestmark = [pytest.mark.real_vllm, pytest.mark.timeout(900)]

CELL = SharedPrefixSpec(num_groups=16, prompts_per_group=3, system_prompt_len=1024, question_len=64, output_len=8)
REQUESTS = 48
GAP_S = 0.5
VOCAB = 8192
"""The tiny model's vocabulary: token ids are folded into it, for the simulated engines too."""
TOLERANCE = 0.03
"""Hit-rate agreement. Five real runs of this cell on the 2-core shared machine (load average 12-24) all gave
0.3725, as the (deterministic) simulator does; what could still move it is an occasional overlap of two requests
when the machine stalls, and the block vLLM reserves (511 usable of 512; the simulator uses all 512, which gives the
same rate on this cell). 0.03 is the agreement criterion of the fidelity study (benchmarks/RESULTS.md); a broken
eviction rule moves the simulated rate far more (MRU instead of LRU: 0.37 -> 0.00)."""


def cell_requests(seed: int = 3) -> list:
    """The cell's requests, ``GAP_S`` apart."""
    reqs = fidelity.pressure_requests(seed, 1.0, REQUESTS, CELL)
    return [replace(r, arrival_s=i * GAP_S) for i, r in enumerate(reqs)]


def _num_blocks(url: str) -> int:
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as resp:
        page = resp.read().decode()
    line = next(x for x in page.splitlines() if x.startswith("vllm:cache_config_info{"))
    return int(line.split('num_gpu_blocks="')[1].split('"')[0])


def real_and_simulated(urls: list[str], blocks: list[int], seed: int = 3) -> tuple[dict, dict]:
    """The cell on the real replicas at ``urls`` and on simulated cores of ``blocks``: two ``fidelity`` rows."""
    reqs = cell_requests(seed)
    real = asyncio.run(run_http(urls, "round-robin", reqs, vocab=VOCAB, tag=f"fidelity-{seed}-"))
    sim = run_virtual(blocks, "round-robin", reqs, "cpu-tiny-llama", vocab=VOCAB)
    return tuple(fidelity.summarize(run | {"target": name, "routing": "round-robin"})  # type: ignore[return-value]
                 for name, run in (("real", real), ("sim", sim)))


def test_simulated_hit_rate_matches_real_vllm_under_kv_pressure(vllm_up: RealStack) -> None:
    urls = vllm_up.engine_urls
    blocks = [_num_blocks(u) for u in urls]
    assert blocks == [512, 512]  # up's default KV cache: the block count the profile was fitted with
    real, sim = real_and_simulated(urls, blocks)
    rows = {"real": real, "sim": sim}
    assert real["errors"] == 0 and sim["errors"] == 0
    # both computed the same prompt tokens; the cell is under pressure (neither all hits nor none)
    tokens = sum(len(r.prompt) for r in token_prompts(cell_requests(), VOCAB))
    assert real["prefix_queries"] == sim["prefix_queries"] == tokens
    hr_real, hr_sim = rows["real"]["hit_rate_engine"], rows["sim"]["hit_rate_engine"]
    assert 0.1 < hr_real < 0.9, rows["real"]
    assert abs(hr_real - hr_sim) <= TOLERANCE, (rows["real"], rows["sim"])
    # what each request reports cached agrees with the counters
    assert rows["real"]["hit_rate_usage"] == pytest.approx(hr_real, abs=0.01)
