"""Governance behind Envoy: the EPP admits through the same director as the router (real Envoy, real EPP, real
sockets): a missing key gets 401, a tenant over its requests per minute 429 with ``Retry-After``, the audit trail
holds every request, and a scheduler config change applies without a restart."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import yaml

from llmd_kserve.config.loader import load_config
from llmd_kserve.control.director import Director
from llmd_kserve.control.reload import config_document
from llmd_kserve.control.settings import RouterSettings
from llmd_kserve.epp.exchange import Exchange
from llmd_kserve.epp.picker import EndpointPicker
from llmd_kserve.epp.protocol import REASON_HEADER
from llmd_kserve.epp.server import epp_runtime
from llmd_kserve.governance.audit import verify
from llmd_kserve.governance.keys import add_key
from tests.epp.gateway import gateway, require_envoy
from tests.epp.test_epp_exchange import headers
from tests.epp.upstream import running_upstream

BODY = {"model": "m", "prompt": "hello", "max_tokens": 5}


async def _wait(predicate, what: str, timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("mode", ["full", "none"])
async def test_keys_rate_limit_audit_and_config_reload_through_envoy(tmp_path, mode):
    require_envoy()
    keys = tmp_path / "keys.yaml"
    gold, _ = add_key(keys, tenant="gold", rpm=2)
    silver, _ = add_key(keys, tenant="silver")
    audit = tmp_path / "audit.jsonl"
    config = tmp_path / "scheduler.yaml"
    doc = config_document(load_config("load-only"))
    config.write_text(yaml.safe_dump(doc))
    settings = {"keys_file": str(keys), "audit_file": str(audit), "config_poll_interval": 0.1}
    async with running_upstream() as up, gateway(tmp_path, [up.url], config=str(config), router=settings,
                                                         response_mode=mode) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=20) as c:
            r = await c.post("/v1/completions", json=BODY)
            assert r.status_code == 401 and r.json()["error"]["type"] == "AuthenticationError", r.text
            r = await c.post("/v1/completions", json=BODY, headers={"Authorization": "Bearer sk-llmd-nope-nope"})
            assert r.status_code == 401 and r.headers[REASON_HEADER] == "unauthorized"
            assert up.seen == []  # refused before any engine saw it
            auth = {"Authorization": f"Bearer {gold}"}
            for _ in range(2):
                r = await c.post("/v1/completions", json=BODY, headers=auth)
                assert r.status_code == 200, r.text
            r = await c.post("/v1/completions", json=BODY, headers=auth)
            assert r.status_code == 429 and r.json()["error"]["type"] == "RateLimitError", r.text
            assert int(r.headers["Retry-After"]) >= 1 and r.headers[REASON_HEADER] == "rpm"
            assert len(up.seen) == 2

            state = gw.epp.state
            before = state.reloader.active.hash
            doc["schedulingProfiles"][0]["plugins"][1]["weight"] = 5.0  # queue-scorer: 2 -> 5
            config.write_text(yaml.safe_dump(doc))
            await _wait(lambda: state.reloader.active.generation == 1, "the config file to be reloaded")
            after = state.reloader.active.hash
            assert after != before
            r = await c.post("/v1/completions", json=BODY, headers={"Authorization": f"Bearer {silver}"})
            assert r.status_code == 200, r.text
            assert state.decisions.recent()[-1]["config_hash"] == after  # scheduled with the new config
        await _wait(lambda: sum(1 for _ in audit.open()) >= 8, "the audit records")
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert verify([audit]).ok
    events = [(r["event"], r.get("tenant"), r.get("status")) for r in records]
    assert events.count(("admit", "gold", None)) == 2 and events.count(("done", "gold", 200)) == 2
    assert ("deny", "gold", 429) in events
    done = [r for r in records if r["event"] == "done"]
    assert len(done) == 3 and all(r["endpoint"] == up.url for r in done)
    # the engine's usage is read in full mode; none never sees the answer, so nothing is metered
    assert [r["prompt_tokens"] for r in done] == [100 if mode == "full" else 0] * 3, done
    assert any(r["event"] == "admin" and r.get("config_hash_after") == after for r in records)


async def test_a_bodiless_inference_request_is_refused_with_governance_on(tmp_path):
    """Headers with end_of_stream on an OpenAI route (no body at all): a 400 from the EPP, not a broken stream."""

    keys = tmp_path / "keys.yaml"
    key, _ = add_key(keys, tenant="t")
    director = Director(epp_runtime(RouterSettings(config="round-robin", keys_file=str(keys)), ["http://10.0.0.1:8000"]))
    assert not director.admits_synchronously
    out = Exchange(EndpointPicker(director)).handle(headers(eos=True, authorization=f"Bearer {key}"))
    assert out[0].immediate_response.status.code == 400
