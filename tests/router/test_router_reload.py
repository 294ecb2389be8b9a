"""Config hot reload on a live router: weights changed under load (no request fails, later decisions use them),
bad configs refused with the field path while the old one stays, the config file watch, admin access rules."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from pathlib import Path

import aiohttp
import pytest
import yaml

from llmd_kserve.config.loader import load_config
from llmd_kserve.control.reload import config_document, config_hash
from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.router.app import running_router

MODEL = "llama-8b-shape"


def _doc(queue_w: float, kv_w: float, active_w: float) -> dict:
    doc = config_document(load_config("load-only"))
    weights = {"queue-scorer": queue_w, "kv-cache-utilization-scorer": kv_w, "active-request-scorer": active_w}
    for ref in doc["schedulingProfiles"][0]["plugins"]:
        if ref["pluginRef"] in weights:
            ref["weight"] = weights[ref["pluginRef"]]
    return doc


def _inflight(router) -> object:
    return next(p for p in router.state.scheduler.current.producers if p.type == "inflight-load-producer")


@contextlib.asynccontextmanager
async def _stack(tmp_path: Path, n: int = 2, time_scale: float = 0.05, **router_kw):
    cfg = tmp_path / "router.yaml"
    cfg.write_text(yaml.safe_dump(_doc(2, 2, 1)))
    async with contextlib.AsyncExitStack() as st:
        engines = [await st.enter_async_context(running_engine(port=0, model=MODEL, time_scale=time_scale, seed=i))
                   for i in range(n)]
        router = await st.enter_async_context(running_router(
            endpoints=[e.url for e in engines], config=str(cfg), scrape_interval=0.02, config_poll_interval=0.05,
            **router_kw))
        session = await st.enter_async_context(aiohttp.ClientSession())
        yield router, session, cfg


async def _load(url: str, stop: asyncio.Event, results: list[int], worker: int) -> None:
    """One closed-loop client: streaming and plain completions, until ``stop``; records every status."""
    async with aiohttp.ClientSession() as s:
        i = 0
        while not stop.is_set() and i < 2000:
            stream = i % 2 == 0
            body = {"model": MODEL, "prompt": f"worker {worker} request {i} " + "word " * 40, "max_tokens": 8,
                    "stream": stream}
            async with s.post(f"{url}/v1/completions", json=body) as r:
                text = await r.text()
                ok = r.status == 200 and (not stream or ("[DONE]" in text and '"error"' not in text))
                results.append(200 if ok else r.status or 599)
            i += 1


async def _wait_for(pred, what: str, tries: int = 400, delay: float = 0.025):
    for _ in range(tries):
        value = await pred()
        if value:
            return value
        await asyncio.sleep(delay)
    raise AssertionError(f"timed out waiting for {what}")


def _check_totals(decision: dict, weights: dict[str, float]) -> None:
    """The logged totals are Σ weight·clamp(raw score) with ``weights`` (the active config's)."""
    assert decision["weights"] == weights
    for ep, total in decision["totals"].items():
        expect = sum(w * min(1.0, max(0.0, decision["scores"][k][ep])) for k, w in weights.items()
                     if ep in decision["scores"].get(k, {}))
        assert total == pytest.approx(expect, abs=1e-9), (ep, decision)


async def test_weights_change_under_load_via_admin_api(tmp_path: Path) -> None:
    async with _stack(tmp_path, admin=True, time_scale=1.0, decisions_size=100_000) as (router, session, _cfg):
        before = await (await session.get(f"{router.url}/admin/config")).json()
        assert before["generation"] == 0 and before["source"].startswith("startup:")
        inflight_before = _inflight(router)
        stop, results = asyncio.Event(), []
        workers = [asyncio.create_task(_load(router.url, stop, results, w)) for w in range(6)]
        try:
            await _wait_for(lambda: asyncio.sleep(0, len(results) >= 20), "load to start")
            # one long stream scheduled by the old config, still streaming when the config changes
            long = await session.post(f"{router.url}/v1/completions", json={
                "model": MODEL, "prompt": "a long one", "max_tokens": 300, "stream": True})
            assert long.status == 200
            await long.content.readline()
            new = _doc(5, 0, 3)
            async with session.post(f"{router.url}/admin/config", json=new) as r:
                assert r.status == 200, await r.text()
                applied = await r.json()
            assert applied["in_flight_at_swap"] >= 1
            long_rest = (await long.read()).decode()
            assert "[DONE]" in long_rest and '"error"' not in long_rest
            long_id = long.headers["x-request-id"]
            long.release()
            assert applied["status"] == "applied"
            assert applied["config_hash"] == config_hash(load_config_doc(new)) != before["config_hash"]
            assert _inflight(router) is inflight_before  # in-flight load accounting carried over, same object
            n_at_change = len(results)
            await _wait_for(lambda: asyncio.sleep(0, len(results) >= n_at_change + 30), "load after the change")

            # a bad config is refused, naming the field; the new config stays
            bad = copy.deepcopy(new)
            bad["schedulingProfiles"][0]["plugins"][1]["weight"] = -1
            async with session.post(f"{router.url}/admin/config", json=bad) as r:
                assert r.status == 400
                err = (await r.json())["error"]
            assert err["param"] == "schedulingProfiles[0].plugins[1].weight" and err["type"] == "BadRequestError"
            async with session.post(f"{router.url}/admin/config", data="plugins: [type: nope]\n",
                                    headers={"Content-Type": "application/yaml"}) as r:
                assert r.status == 400
            async with session.post(f"{router.url}/admin/config", data="{not json",
                                    headers={"Content-Type": "application/json"}) as r:
                assert r.status == 400 and (await r.json())["error"]["param"] == "body"
            active = await (await session.get(f"{router.url}/admin/config")).json()
            assert active["config_hash"] == applied["config_hash"] and active["generation"] == 1
            assert active["config"] == config_document(load_config_doc(new))
            assert active["last_error"]["source"] == "api"
            await _wait_for(lambda: asyncio.sleep(0, len(results) >= n_at_change + 60), "more load")
        finally:
            stop.set()
            await asyncio.gather(*workers)
        assert results and all(s == 200 for s in results), sorted(set(results))

        decisions = (await (await session.get(f"{router.url}/debug/decisions")).json())["decisions"]
        old_w = {"default/queue-scorer": 2, "default/kv-cache-utilization-scorer": 2,
                 "default/active-request-scorer": 1}
        new_w = {"default/queue-scorer": 5, "default/kv-cache-utilization-scorer": 0,
                 "default/active-request-scorer": 3}
        after = [d for d in decisions if d["config_hash"] == applied["config_hash"]]
        assert len(after) >= 30
        for d in after:
            _check_totals(d, new_w)
        for d in decisions:
            if d["config_hash"] == before["config_hash"]:
                _check_totals(d, old_w)
        # the newest decision was made with the new config; every scheduled request completed on its scheduler
        assert decisions[-1]["config_hash"] == applied["config_hash"]
        long_decision = (await (await session.get(
            f"{router.url}/debug/decisions?request_id={long_id}")).json())["decisions"]
        assert [(d["config_hash"], d["outcome"]) for d in long_decision] == [(before["config_hash"], "ok")]
        assert router.state.scheduler.in_flight() == 0
        for ep in router.state.pool.snapshot:
            assert _inflight(router).load(ep.id) == (0, 0)
        metrics = await (await session.get(f"{router.url}/metrics")).text()
        assert 'llmd_router_config_reloads_total{result="applied",source="api"} 1.0' in metrics
        assert 'llmd_router_config_reloads_total{result="refused",source="api"} 3.0' in metrics


def load_config_doc(doc: dict):
    from llmd_kserve.config.loader import parse_config

    return parse_config(doc)


async def test_config_file_change_is_reloaded_and_a_bad_edit_keeps_the_old(tmp_path: Path) -> None:
    async with _stack(tmp_path, admin=True) as (router, session, cfg):
        async def status():
            return await (await session.get(f"{router.url}/admin/config")).json()

        first = await status()
        assert first["watching"] == str(cfg)
        cfg.write_text(yaml.safe_dump(_doc(1, 0, 7)))
        changed = await _wait_for(lambda: _gen_at_least(status, 1), "the file change to apply")
        assert changed["source"] == f"file:{cfg}" and changed["config_hash"] != first["config_hash"]
        async with session.post(f"{router.url}/v1/completions", json={"model": MODEL, "prompt": "hi",
                                                                      "max_tokens": 2}) as r:
            assert r.status == 200
        d = (await (await session.get(f"{router.url}/debug/decisions?limit=1")).json())["decisions"][-1]
        assert d["config_hash"] == changed["config_hash"]
        _check_totals(d, {"default/queue-scorer": 1, "default/kv-cache-utilization-scorer": 0,
                          "default/active-request-scorer": 7})

        cfg.write_text("plugins:\n- type: queue-scorer\n  parameters: {bogus: 1}\nschedulingProfiles: []\n")
        refused = await _wait_for(lambda: _has_error(status), "the bad edit to be refused")
        assert refused["config_hash"] == changed["config_hash"] and refused["generation"] == 1
        assert refused["last_error"]["source"] == f"file:{cfg}" and refused["last_error"]["param"]


async def _gen_at_least(status, n: int):
    s = await status()
    return s if s["generation"] >= n else None


async def _has_error(status):
    s = await status()
    return s if s["last_error"] else None


async def test_admin_is_off_without_the_flag_and_needs_a_key_when_keys_are_set(tmp_path: Path) -> None:
    async with _stack(tmp_path, n=1) as (router, session, _cfg):
        async with session.get(f"{router.url}/admin/config") as r:
            assert r.status == 403 and "--admin" in (await r.json())["error"]["message"]
        async with session.post(f"{router.url}/admin/config", json=_doc(1, 1, 1)) as r:
            assert r.status == 403
    async with _stack(tmp_path, n=1, admin=True, api_keys=("k1",)) as (router, session, _cfg):
        async with session.post(f"{router.url}/admin/config", json=_doc(1, 1, 1)) as r:
            assert r.status == 401
        async with session.post(f"{router.url}/admin/config", json=_doc(1, 1, 1),
                                headers={"Authorization": "Bearer k1"}) as r:
            assert r.status == 200 and (await r.json())["status"] == "applied"


async def test_admin_client_applies_a_shipped_config_by_name(tmp_path: Path) -> None:
    from llmd_kserve.router.admin_client import AdminError, active_config, apply_config

    async with _stack(tmp_path, n=1, admin=True) as (router, _session, _cfg):
        out = await asyncio.to_thread(apply_config, router.url, "round-robin")
        assert out["status"] == "applied"
        now = await asyncio.to_thread(active_config, router.url)
        assert now["config_hash"] == out["config_hash"] == config_hash(load_config("round-robin"))
        bad = _doc(1, 1, 1)
        bad["plugins"][1]["type"] = "no-such-plugin"
        with pytest.raises(AdminError) as info:
            await asyncio.to_thread(apply_config, router.url, bad)
        assert info.value.status == 400 and info.value.param == "plugins[1].type"
