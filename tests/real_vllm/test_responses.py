"""Real vLLM's ``/v1/responses`` through the router: two replicas storing responses
(``VLLM_ENABLE_RESPONSES_API_STORE=1``); each continuation reaches the replica that stored its previous response."""

from __future__ import annotations

import json
import os
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real_vllm.conftest import RealStack, post, running_up

pytestmark = [pytest.mark.real_vllm, pytest.mark.timeout(900)]
OWN_STACK = True


@pytest.fixture(scope="module")
def store_up(vllm_python: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealStack]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_ENABLE_RESPONSES_API_STORE", "1")  # the replicas inherit it
        assert os.environ["VLLM_ENABLE_RESPONSES_API_STORE"] == "1"
        with running_up(vllm_python, tiny_model_dir, tmp_path_factory.mktemp("responses"), "--engines", "2",
                        "--config", "sessions") as stack:
            yield stack


def test_a_response_chain_stays_on_the_replica_that_stores_it(store_up: RealStack) -> None:
    url = f"{store_up.router_url}/v1/responses"
    first, headers = post(url, {"model": store_up.model, "input": "Hello there", "max_output_tokens": 4})
    home = headers["x-llmd-endpoint"]
    assert first["id"] and first["status"] in ("completed", "incomplete")  # incomplete: max_output_tokens hit
    prev = first["id"]
    for i in range(4):  # the other replica would answer 404: it does not hold the conversation
        nxt, headers = post(url, {"model": store_up.model, "input": f"And {i}?", "max_output_tokens": 4,
                                  "previous_response_id": prev})
        assert headers["x-llmd-endpoint"] == home and nxt["previous_response_id"] == prev
        prev = nxt["id"]
    with pytest.raises(urllib.error.HTTPError) as err:  # an id nobody stored: vLLM's own 404, relayed
        post(url, {"model": store_up.model, "input": "?", "previous_response_id": "resp_nobody"})
    assert err.value.code == 404 and json.loads(err.value.read())["error"]["message"]
