"""The engine's /metrics honours ``?name[]=`` and gzip like prometheus_client's ``make_asgi_app`` (``_bake_output``)."""

from __future__ import annotations

import gzip

import aiohttp
import pytest
from prometheus_client.exposition import _bake_output

from llmd_kserve.engine_sim.core import EngineCore
from llmd_kserve.engine_sim.metrics import EngineMetrics
from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.metrics.parse import SCRAPE_NAMES, parse_vllm_metrics

FILTERS = [
    SCRAPE_NAMES,
    ("vllm:time_to_first_token_seconds_bucket", "vllm:time_to_first_token_seconds_count"),
    ("vllm:time_to_first_token_seconds",),  # a histogram's family name is no sample name: nothing
    ("vllm:request_success_total", "no_such_metric"),
    ("no_such_metric",),
]


def _reference(m: EngineMetrics, names: tuple[str, ...], accept_encoding: str = "") -> tuple[bytes, dict[str, str]]:
    _, headers, body = _bake_output(m.registry, "", accept_encoding, {"name[]": list(names)}, False)
    return body, dict(headers)


@pytest.mark.parametrize("names", FILTERS)
def test_filtered_page_is_prometheus_clients(profile, names):
    m = EngineMetrics(EngineCore(profile, num_blocks=20, block_size=16), "m")
    m.core.stats.prefix_hits += 32
    m.ttft.observe(0.02)
    assert m.render(names) == _reference(m, names)[0]
    assert (m.render(names) == b"") == (names in (FILTERS[2], FILTERS[4]))  # exact sample names only
    assert gzip.decompress(m.render(names, gzipped=True)) == m.render(names)


def test_scrape_names_page_is_small_and_parses_like_the_full_page(profile):
    m = EngineMetrics(EngineCore(profile, num_blocks=20, block_size=16), "m")
    m.core.stats.prefix_hits += 32
    m.core.stats.prefix_queries += 64
    full, small = m.render(), m.render(SCRAPE_NAMES)
    assert len(small) * 10 < len(full)
    assert b"_bucket" not in small and b"_created" not in small and b"vllm:num_requests_waiting{" in small
    assert parse_vllm_metrics(small.decode(), 1.0) == parse_vllm_metrics(full.decode(), 1.0)


def test_one_cached_page_per_filter(profile):
    m = EngineMetrics(EngineCore(profile, num_blocks=20, block_size=16), "m")
    a, b = m.render(SCRAPE_NAMES), m.render()
    assert m.render(SCRAPE_NAMES) is a and m.render() is b and a != b
    assert m.render(tuple(reversed(SCRAPE_NAMES))) is a  # the same set of names
    m.core.stats.prefix_hits += 16
    assert m.render(SCRAPE_NAMES) is not a and b"16.0" in m.render(SCRAPE_NAMES)


async def test_http_name_filter_and_gzip():
    names = SCRAPE_NAMES
    query = "&".join(f"name[]={n}" for n in (*names, ""))  # a blank value is dropped (parse_qs)
    async with running_engine(port=0, model="llama-8b-shape", time_scale=0.0) as eng, \
            aiohttp.ClientSession(auto_decompress=False) as s:
        ref, _ = _reference(eng.metrics, names)
        async with s.get(f"{eng.url}/metrics?{query}", headers={"Accept-Encoding": "identity"}) as r:
            assert r.status == 200 and "Content-Encoding" not in r.headers
            assert await r.read() == ref
        async with s.get(f"{eng.url}/metrics?{query}", headers={"Accept-Encoding": "gzip, deflate"}) as r:
            _, ref_headers = _reference(eng.metrics, names, "gzip, deflate")
            assert r.headers["Content-Encoding"] == ref_headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(await r.read()) == ref
        async with s.get(f"{eng.url}/metrics", headers={"Accept-Encoding": "identity"}) as r:
            full = await r.read()
        assert full == _bake_output(eng.metrics.registry, "", "", {}, False)[2] and len(full) > 10 * len(ref)
