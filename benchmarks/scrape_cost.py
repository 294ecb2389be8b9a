"""Router-side CPU per metrics scrape of one simulated engine, four ways in one run: the old way (aiohttp GET of the
full page, parsed) with gzip (aiohttp's default; a server that honours it) and without (vLLM's ``/metrics`` today),
and the scraper's (its lean keep-alive client, identity) of the full page (a server that ignores ``name[]``, as vLLM today) and of
the ``?name[]=`` page.

    PYTHONPATH=. .venv/bin/python benchmarks/scrape_cost.py [--scrapes 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from router_overhead import free_port, wait_ready  # noqa: E402
from router_vs_vllm_router import PY, spawn  # noqa: E402

from llmd_kserve.aio import run as aio_run  # noqa: E402
from llmd_kserve.metrics.parse import parse_vllm_metrics  # noqa: E402
from llmd_kserve.metrics.scraper import MetricsScraper  # noqa: E402
from llmd_kserve.types import Endpoint, EndpointId  # noqa: E402


async def main(a: argparse.Namespace) -> dict:
    with ExitStack() as stack:
        port = free_port()
        proc = spawn([PY, "-m", "llmd_kserve.cli", "engine", "--host", "127.0.0.1", "--port", str(port), "--model",
                      "llama-8b-shape"], stack)
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, url, proc)
            eid = EndpointId(url)
            scrapers = {"scraper_full_us": MetricsScraper(interval=10.0, name_filter=False),
                        "scraper_filtered_us": MetricsScraper(interval=10.0)}
            for sc in scrapers.values():
                sc.set_endpoints([Endpoint(eid)])
            rounds = []
            for _ in range(a.rounds):
                row = {}
                for name, enc in (("aiohttp_full_gzip_us", "gzip, deflate"), ("aiohttp_full_identity_us", "identity")):
                    t0 = time.process_time()
                    for _ in range(a.scrapes):
                        async with s.get(f"{url}/metrics", headers={"Accept-Encoding": enc}) as r:
                            parse_vllm_metrics(await r.text(), 0.0)
                    row[name] = (time.process_time() - t0) / a.scrapes * 1e6
                for name, sc in scrapers.items():
                    t0 = time.process_time()
                    for _ in range(a.scrapes):
                        assert await sc.scrape_one(eid)
                    row[name] = (time.process_time() - t0) / a.scrapes * 1e6
                rounds.append(row)
                print(json.dumps(row), flush=True)
            for sc in scrapers.values():
                await sc.stop()
    return {"scrapes": a.scrapes, "rounds": rounds}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scrapes", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    print(json.dumps(aio_run(main(p.parse_args())), indent=2))
