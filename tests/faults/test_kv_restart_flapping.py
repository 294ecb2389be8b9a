"""Issue 14, reliability: a KV-event publisher (engine) killed, silent for a long gap, restarted on the same
addresses: the router's index drops the dead engine's blocks and rebuilds from the new publisher. An endpoint
flapping (killed and restarted repeatedly) under load: every non-streamed request still answers 200."""

from __future__ import annotations

import json
import threading
import time

import pytest

from llmd_kserve.stack.procs import free_port as _free_port
from tests.faults.procs import Proc, cli, engine, request, router, running, wait_for

pytestmark = pytest.mark.slow  # real processes and sockets: the full suite runs them, the fast loop does not


def _engine_on(tmp, name: str, port: int, zport: int) -> Proc:
    return Proc(cli("engine", "--host", "127.0.0.1", "--port", str(port), "--time-scale", "0.05",
                    "--kv-events-endpoint", f"tcp://127.0.0.1:{zport}"), tmp / f"{name}.log", ready="engine ready")


def _debug(url: str) -> dict:
    return json.loads(request(url + "/debug/endpoints")[1])


def _complete(url: str, prompt: str) -> int:
    return request(url + "/v1/completions", {"model": "llama-8b-shape", "prompt": prompt, "max_tokens": 2})[0]


def test_kv_publisher_restart_after_a_long_gap_rebuilds_the_index(tmp_path):
    port, zport = _free_port(), _free_port()
    eng = _engine_on(tmp_path, "e0", port, zport)
    ep = f"http://127.0.0.1:{port}#kv=tcp://127.0.0.1:{zport}"
    r = router(tmp_path, ep, "--config", "precise-prefix")
    with running(r):
        try:
            for i in range(6):
                assert _complete(r.url, f"old prompt {i} " * 40) == 200
            assert wait_for(lambda: _debug(r.url)["index_keys"] > 0)
            before = _debug(r.url)["index_keys"]
        finally:
            eng.popen.kill()  # SIGKILL: no goodbye on the event stream
            eng.popen.wait(10)
            eng.stop()
        time.sleep(3.0)  # a long gap: nothing published, the router keeps its (now stale) index
        eng2 = _engine_on(tmp_path, "e0-restarted", port, zport)
        with running(eng2):
            n = iter(range(10_000))

            def fresh_blocks_indexed() -> bool:  # new prompts until the re-connected subscriber hears their blocks
                return _complete(r.url, f"new prompt {next(n)} " * 40) == 200 and _debug(r.url)["index_keys"] > 0

            assert wait_for(fresh_blocks_indexed, timeout=30)
            # the connection loss dropped the dead engine's blocks; only the restarted one's new blocks are indexed
            assert _debug(r.url)["index_keys"] < before, (before, _debug(r.url))
            metrics = request(r.url + "/metrics")[1].decode()
            assert "llmd_router_kv_events_disconnects_total" in metrics


@pytest.mark.slow
def test_flapping_endpoint_under_load_every_request_answers(tmp_path):
    stable = engine(tmp_path, "stable")
    port = _free_port()
    flappy = Proc(cli("engine", "--host", "127.0.0.1", "--port", str(port), "--time-scale", "0.05"),
                  tmp_path / "flappy.log", ready="engine ready")
    r = router(tmp_path, f"{stable.url},http://127.0.0.1:{port}", "--eject-s", "0.2")
    stop = threading.Event()
    statuses: list[int] = []
    current = [flappy]

    def load() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            statuses.append(_complete(r.url, f"load {i}"))

    with running(stable, r):
        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            for cycle in range(3):  # down 0.7 s, up 0.7 s
                time.sleep(0.7)
                current[0].popen.kill()
                current[0].popen.wait(10)
                current[0].stop()
                time.sleep(0.7)
                current[0] = Proc(cli("engine", "--host", "127.0.0.1", "--port", str(port), "--time-scale", "0.05"),
                                  tmp_path / f"flappy{cycle}.log", ready="engine ready")
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
            current[0].stop()
        metrics = request(r.url + "/metrics")[1].decode()
    assert len(statuses) > 20 and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert "llmd_router_retries_total" in metrics
