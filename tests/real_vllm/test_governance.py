"""Virtual keys and the audit trail in front of real engines: what a tenant is billed is what the engines counted
(their own ``vllm:prompt_tokens_total`` / ``vllm:generation_tokens_total``), for plain and streamed answers with
and without usage asked for, and ``audit verify`` accepts the trail."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import aiohttp
import pytest

from llmd_kserve.governance.keys import add_key
from tests.real_vllm.conftest import ROOT, RealStack, cli, cli_env, counter, router_over, wait_for

pytestmark = [pytest.mark.real_vllm, pytest.mark.timeout(900)]


async def _engine_tokens(session: aiohttp.ClientSession, engines: list[str]) -> tuple[float, float]:
    prompt = completion = 0.0
    for url in engines:
        page = await (await session.get(f"{url}/metrics")).text()
        prompt += counter(page, "vllm:prompt_tokens_total")
        completion += counter(page, "vllm:generation_tokens_total")
    return prompt, completion


async def test_tenant_billed_what_the_engines_counted(vllm_up: RealStack, tiny_model_dir: Path,
                                                      tmp_path: Path) -> None:
    keys, audit = tmp_path / "keys.yaml", tmp_path / "audit.jsonl"
    tenant, record = add_key(keys, tenant="acme", models=(vllm_up.model,), token_budget=1_000_000)
    operator, _ = add_key(keys, tenant="ops", admin=True)
    elsewhere, _ = add_key(keys, tenant="acme", models=("another-model",))
    model = vllm_up.model
    async with router_over(vllm_up.endpoints, tiny_model_dir, keys_file=str(keys), audit_file=str(audit)) as router, \
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {tenant}"}) as s:
        before = await _engine_tokens(s, vllm_up.engine_urls)
        bodies = [("/v1/completions", {"prompt": "Tell me about foxes " * 20, "max_tokens": 7, "ignore_eos": True}),
                  ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 5,
                                            "ignore_eos": True, "stream": True}),
                  ("/v1/completions", {"prompt": "Stream this " * 30, "max_tokens": 9, "ignore_eos": True,
                                       "stream": True, "stream_options": {"include_usage": True}})]
        seen_usage = []
        for path, body in bodies:
            async with s.post(f"{router.url}{path}", json={"model": model, **body}) as r:
                assert r.status == 200, await r.text()
                raw = await r.read()
            if body.get("stream"):
                events = [ln[6:] for ln in raw.decode().splitlines() if ln.startswith("data: ")]
                assert events[-1] == "[DONE]"
                usage = [json.loads(e)["usage"] for e in events[:-1] if json.loads(e).get("usage")]
                assert len(usage) == (1 if "stream_options" in body else 0)  # the router asks; the client gets what it asked
                seen_usage += usage
            else:
                seen_usage.append(json.loads(raw)["usage"])
        async with s.post(f"{router.url}/v1/completions", json={"model": model, "prompt": "hi"},
                          headers={"Authorization": f"Bearer {elsewhere}"}) as r:
            assert r.status == 403  # a key for another model: refused, nothing reaches an engine
        gateway = router.state.governance.gateway

        async def settled() -> bool:
            return bool(gateway.limiter.used(record.id) > 0 and gateway.limiter.reserved(record.id) == 0)

        await wait_for(settled, "the tenant's requests settled")

        async def engines_counted() -> bool:  # the engines' counters follow their answers closely, not at once
            return (await _engine_tokens(s, vllm_up.engine_urls))[1] - before[1] == 7 + 5 + 9

        await wait_for(engines_counted, "the engines counted the completions")
        after = await _engine_tokens(s, vllm_up.engine_urls)
        prompt, completion = after[0] - before[0], after[1] - before[1]
        assert gateway.limiter.used(record.id) == prompt + completion
        metrics = await (await s.get(f"{router.url}/metrics", headers={"Authorization": f"Bearer {operator}"})).text()
        assert counter(metrics, "llmd_gateway_tokens_total", tenant="acme", kind="prompt") == prompt
        assert counter(metrics, "llmd_gateway_tokens_total", tenant="acme", kind="completion") == completion
    done = [r for r in map(json.loads, audit.read_text().splitlines()) if r["event"] == "done"]
    assert [r["usage_source"] for r in done] == ["engine"] * 3
    assert sum(r["prompt_tokens"] for r in done) == prompt and sum(r["completion_tokens"] for r in done) == completion
    assert {r["endpoint"] for r in done} <= set(vllm_up.engine_urls)
    assert sum(u["completion_tokens"] for u in seen_usage) == 7 + 9
    check = subprocess.run(cli("audit", "verify", str(audit)), capture_output=True, text=True, timeout=120, cwd=ROOT,
                           env=cli_env())
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["ok"] is True
