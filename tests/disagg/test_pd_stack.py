"""`llmd-kserve up --prefill N --decode M`: the local stack runs the disaggregated topology (real processes)."""

from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmd_kserve.stack import LocalStack

PROMPT = " ".join(f"w{i % 97}x{i % 13}" for i in range(400))


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def _metric(text: str, name: str, **labels: str) -> float:
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.mark.slow
def test_up_with_prefill_and_decode_pools():
    with LocalStack(prefill=1, decode=1, prometheus=False, time_scale=0.02) as stack:
        roles = sorted(u.split("role=")[1].split("&")[0] for u in stack.engine_urls)
        assert roles == ["decode", "prefill"]
        prefill_url, decode_url = (next(u.split("#")[0] for u in stack.engine_urls if f"role={r}" in u)
                                   for r in ("prefill", "decode"))
        body = {"model": "llama-8b-shape", "prompt": PROMPT, "max_tokens": 4}
        _post(stack.router_url + "/v1/completions", body)
        (d,) = json.loads(_get(stack.router_url + "/debug/decisions"))["decisions"]
        assert d["profile"] == "decode" and d["target"] == decode_url  # the default config became pd-predicted-ttft
        metrics = _get(stack.router_url + "/metrics")
        assert _metric(metrics, "llmd_router_pd_requests_total") == 1
        stack.restart_router("pd-always")
        out = _post(stack.router_url + "/v1/completions", body)
        assert out["usage"]["completion_tokens"] == 4
        (d,) = json.loads(_get(stack.router_url + "/debug/decisions"))["decisions"]
        assert (d["target"], d["prefill"]) == (decode_url, prefill_url)
        assert _metric(_get(stack.router_url + "/metrics"), "llmd_router_pd_requests_total", mode="disaggregated") == 1
        assert _metric(_get(decode_url + "/metrics"), "vllm:nixl_xfer_time_seconds_count") == 1
