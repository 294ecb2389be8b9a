"""Governance through a real router in-process: keys (401/403), limits (429 + Retry-After), guardrails, flow-control
drops with their reason header, metered stream usage, the audit trail, and nothing secret in logs or metrics."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp

from llmd_kserve.governance.audit import verify
from llmd_kserve.governance.keys import add_key
from llmd_kserve.router.app import running_router
from tests.router.fake_upstream import running_fake

GUARDS = "guardrails:\n  - type: blocklist\n    keywords: [forbidden-topic]\n  - type: pii-redaction\n"


async def _post(s, url, key, body, path="/v1/completions"):
    async with s.post(url + path, json=body, headers={"Authorization": f"Bearer {key}"} if key else {}) as r:
        return r.status, await r.read(), dict(r.headers)


def _err(raw: bytes) -> dict:
    err = json.loads(raw)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


async def test_keys_limits_guardrails_audit_through_the_router(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    keys = tmp_path / "keys.yaml"
    gold, gold_rec = add_key(keys, tenant="gold", models=("fake-model",), rpm=2)
    other, _ = add_key(keys, tenant="other", models=("another-model",))
    (tmp_path / "g.yaml").write_text(GUARDS)
    audit = tmp_path / "audit.jsonl"
    async with running_fake(tokens=5) as fake, running_router(
            endpoints=[fake.url], keys_file=str(keys), api_keys=("legacy-token",), audit_file=str(audit),
            guardrails_file=str(tmp_path / "g.yaml"), flow_per_endpoint=8) as router, aiohttp.ClientSession() as s:
        url = router.url
        st, raw, _ = await _post(s, url, None, {"model": "fake-model", "prompt": "hi"})
        assert st == 401 and _err(raw)["type"] == "AuthenticationError"
        st, raw, _ = await _post(s, url, other, {"model": "fake-model", "prompt": "hi"})
        assert st == 403 and _err(raw)["type"] == "PermissionDeniedError"
        st, raw, _ = await _post(s, url, gold, {"model": "fake-model", "prompt": "about forbidden-topic"})
        assert st == 400 and "forbidden" not in _err(raw)["message"]
        st, raw, _ = await _post(s, url, gold, {"model": "fake-model", "prompt": "mail me at a@b.io",
                                                "stream": True})
        assert st == 200 and raw.rstrip().endswith(b"data: [DONE]") and b'"usage"' not in raw
        st, raw, _ = await _post(s, url, gold, {"model": "fake-model", "prompt": "hi"})
        assert st == 200
        st, raw, headers = await _post(s, url, gold, {"model": "fake-model", "prompt": "hi"})
        assert st == 429 and _err(raw)["type"] == "RateLimitError" and int(headers["Retry-After"]) >= 1
        assert headers["x-llmd-drop-reason"] == "rpm"
        st, _, _ = await _post(s, url, "legacy-token", {"model": "fake-model", "prompt": "hi"})
        assert st == 200  # the plain --api-keys-file list keeps working
        async with s.get(url + "/metrics", headers={"Authorization": f"Bearer {gold}"}) as r:
            assert r.status == 403  # a tenant's key sees no other tenant's numbers
        metrics = (await (await s.get(url + "/metrics", headers={"Authorization": "Bearer legacy-token"})).read()).decode()
        # the injected stream usage was metered: 10 prompt + 5 completion per answer
        assert 'llmd_gateway_tokens_total{kind="completion",tenant="gold"} 10.0' in metrics
        assert 'llmd_gateway_requests_total{outcome="rpm",tenant="gold"} 1.0' in metrics
        assert "llmd_gateway_in_flight 0.0" in metrics and "llmd_gateway_audit_head_seq" in metrics
        assert router.state.governance.gateway.limiter.used(gold_rec.id) == 0  # no tpm/budget on this key: nothing tracked
    rep = verify([audit])
    assert rep.ok, rep.errors
    recs = [json.loads(x) for x in audit.read_text().splitlines()]
    events = [(r["event"], r.get("tenant"), r.get("status")) for r in recs]
    assert events.count(("deny", "gold", 429)) == 1 and ("deny", "other", 403) in events
    done = [r for r in recs if r["event"] == "done" and r["tenant"] == "gold"]
    assert len(done) == 2 and all(r["status"] == 200 and r["completion_tokens"] == 5 for r in done)
    assert all(len(r["completion_hmac_sha256"]) == 64 and r["endpoint"] == fake.url for r in done)
    assert not any("prompt" in r for r in recs)  # hashes only by default
    text = audit.read_text() + caplog.text + metrics
    for secret in (gold, other, gold.split("-", 3)[3], "legacy-token", "a@b.io"):
        assert secret not in text


async def test_flow_control_queues_by_tenant_and_drops_with_reason(tmp_path):
    keys = tmp_path / "keys.yaml"
    a, _ = add_key(keys, tenant="a")
    b, _ = add_key(keys, tenant="b")
    async with running_fake(tokens=20, token_delay=0.01) as fake, running_router(
            endpoints=[fake.url], keys_file=str(keys), flow_per_endpoint=3, flow_band_capacity=3,
            flow_ttl_s=30) as router, aiohttp.ClientSession() as s:
        body = {"model": "fake-model", "prompt": "x", "stream": True}
        flood = [asyncio.ensure_future(_post(s, router.url, a, body)) for _ in range(5)]
        await asyncio.sleep(0.05)  # two running (the third slot is kept for another tenant), three queued: band full
        st, raw, headers = await _post(s, router.url, a, body)
        assert st == 429 and headers["x-llmd-drop-reason"] == "band_full"
        assert router.state.governance.gateway.flow.queue.depth() == {0: 3}
        router.state.governance.gateway.flow.queue.policy = type(router.state.governance.gateway.flow.queue.policy)(10, 30)
        late_b = asyncio.ensure_future(_post(s, router.url, b, {**body, "prompt": "from-b"}))
        results = await asyncio.gather(*flood, late_b)
        assert all(r[0] == 200 for r in results)
        prompts = [x["body"]["prompt"] for x in fake.seen]
        # B came after A's three queued requests but went at once: the kept slot is for a tenant with none in flight
        assert len(prompts) == 6 and prompts.index("from-b") == 2
        q = router.state.governance.gateway.flow.queue
        assert q.in_flight == 0 and q.tenant_in_flight == {} and q.depth() == {}
