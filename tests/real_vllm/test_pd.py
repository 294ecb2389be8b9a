"""`up --engine vllm --prefill 1 --decode 1`: prefill and decode replicas with vLLM's NixlConnector, which moves the
KV cache between two CPU replicas (UCX); the router's P/D handshake runs end to end on real engines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real_vllm.conftest import RealStack, counter, get, post, running_up

pytestmark = [pytest.mark.real_vllm, pytest.mark.timeout(900)]
OWN_STACK = True


@pytest.fixture(scope="module")
def pd_up(vllm_python: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealStack]:
    with running_up(vllm_python, tiny_model_dir, tmp_path_factory.mktemp("pd"), "--prefill", "1", "--decode", "1",
                    "--config", "pd-always") as stack:
        yield stack


def test_decode_gets_the_prompt_from_prefill_over_nixl(pd_up: RealStack) -> None:
    prefill, decode = pd_up.engine_urls
    assert [spec.split("#")[1].split("&")[0] for spec in pd_up.endpoints] == ["role=prefill", "role=decode"]
    before = get(f"{decode}/metrics")
    prompt = " ".join(f"token{i}" for i in range(150))
    out, headers = post(f"{pd_up.router_url}/v1/completions",
                        {"model": "tiny-llama", "prompt": prompt, "max_tokens": 3, "ignore_eos": True})
    assert out["usage"]["completion_tokens"] == 3
    assert headers["x-llmd-endpoint"].rstrip("/") == decode
    decision = json.loads(get(f"{pd_up.router_url}/debug/decisions"))["decisions"][-1]
    assert decision["prefill"].rstrip("/") == prefill and decision["outcome"] == "ok"
    after = get(f"{decode}/metrics")
    source = "vllm:prompt_tokens_by_source_total"
    transferred = counter(after, source, source="external_kv_transfer") - counter(before, source,
                                                                                     source="external_kv_transfer")
    computed = counter(after, source, source="local_compute") - counter(before, source, source="local_compute")
    prompt_tokens = out["usage"]["prompt_tokens"]
    assert prompt_tokens - 32 < transferred <= prompt_tokens  # the prompt's KV came from the prefill replica
    assert computed < 32  # the decode replica computed little or nothing of it
    xfers = "vllm:nixl_xfer_time_seconds_count"
    assert counter(after, xfers) == counter(before, xfers) + 1
    routed = get(f"{pd_up.router_url}/metrics")  # the router counts what the prefill engine said it holds
    assert counter(routed, "llmd_router_pd_kv_transfer_tokens_total") == prompt_tokens
