"""Router pod discovery over a recorded watch stream, parsed by the real ``kubernetes.watch.Watch``."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from llmd_kserve.errors import ClusterError
from llmd_kserve.kube.discovery import PodDiscovery, pod_endpoint, watch_endpoints
from llmd_kserve.kube.fake import FakeKubeApi
from llmd_kserve.types import PROFILE_LABEL

RECORDING = Path(__file__).parent / "data" / "pod_watch.jsonl"
SELECTOR = "llmd.kserve.io/pool=llmd"
P0 = "http://10.244.1.11:8000"
D0, D1, D2 = "http://10.244.2.21:8000", "http://10.244.2.22:8000", "http://10.244.2.23:8000"
EXPECTED = [  # every distinct ready set, in order
    [],                 # initial list: nothing yet
    [P0],               # prefill Running but not Ready, then Ready
    [P0, D0],
    [P0, D0, D1],
    [P0, D1],           # decode-0 failed readiness
    [P0, D0, D1],       # ... and recovered; then the watch expired (410) and discovery re-listed: no change
    [P0, D0],           # decode-1 terminating (deletionTimestamp), then DELETED
    [P0, D0, D2],       # replacement pod joined
]


def recorded_batches() -> list[list[str]]:
    """The recording split into watch responses: an ERROR (410 Gone) ends one response."""
    batches, current = [], []
    for line in RECORDING.read_text().splitlines():
        current.append(line)
        if json.loads(line)["type"] == "ERROR":
            batches.append(current)
            current = []
    return [*batches, current]


def fake_cluster() -> FakeKubeApi:
    fake = FakeKubeApi()
    fake.watch_batches = recorded_batches()
    return fake


def ids(endpoints):
    return sorted(e.id for e in endpoints)


def test_discovery_follows_the_recorded_stream():
    fake = fake_cluster()
    seen, done = [], threading.Event()

    def on_change(endpoints):
        seen.append(endpoints)
        if len(seen) == len(EXPECTED):
            done.set()

    disc = PodDiscovery(on_change, selector=SELECTOR, namespace="llmd", core_api=fake, retry_delay=0.01)
    thread = threading.Thread(target=disc.run, daemon=True)
    thread.start()
    assert done.wait(60), f"got only {len(seen)} updates: {[ids(s) for s in seen]}"
    disc.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert [ids(s) for s in seen] == EXPECTED
    final = {e.id: e for e in seen[-1]}
    assert final[P0].role == "prefill" and final[D2].role == "decode"
    assert final[P0].kv_events == "tcp://10.244.1.11:5557"
    assert final[D2].labels["pod"] == "llmd-decode-predictor-5d8c7b9f4-g5h6i"
    lists = [c for c in fake.calls if c[0] == "list" and c[1] == "Pod"]
    assert len(lists) == 2  # the initial list and the re-list after 410 Gone


async def test_watch_endpoints_delivers_on_the_event_loop():
    fake = fake_cluster()
    loop_thread = threading.get_ident()
    seen, done = [], asyncio.Event()

    def on_change(endpoints):
        assert threading.get_ident() == loop_thread
        seen.append(ids(endpoints))
        if seen[-1] == EXPECTED[-1]:
            done.set()

    task = asyncio.create_task(watch_endpoints(on_change, selector=SELECTOR, namespace="llmd", core_api=fake,
                                               retry_delay=0.01))
    await asyncio.wait_for(done.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == EXPECTED


async def test_rbac_denied_watch_is_a_cluster_error():
    fake = FakeKubeApi(forbidden={("list", "pods")})
    with pytest.raises(ClusterError, match="RBAC denied"):
        await asyncio.wait_for(watch_endpoints(lambda eps: None, selector=SELECTOR, namespace="llmd",
                                               core_api=fake), 30)


def test_pod_endpoint_rules_on_raw_pods():
    pod = json.loads(RECORDING.read_text().splitlines()[-1])["object"]
    assert pod_endpoint(pod).id == D2
    assert pod_endpoint(pod, port=9000, kv_events_port=None).kv_events is None
    pod["metadata"]["labels"]["llm-d.ai/role"] = "sidecar"
    assert pod_endpoint(pod).role == "both"
    assert PROFILE_LABEL not in pod_endpoint(pod).labels
    pod["metadata"]["labels"][PROFILE_LABEL] = "a100-40g-llama8b-derived"  # mixed GPUs: the scheduler times it so
    assert pod_endpoint(pod).labels[PROFILE_LABEL] == "a100-40g-llama8b-derived"
    pod["status"]["podIP"] = "fd00::17"
    assert pod_endpoint(pod).id == "http://[fd00::17]:8000"
    pod["status"]["phase"] = "Succeeded"
    assert pod_endpoint(pod) is None
