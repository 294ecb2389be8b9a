"""Admin API and scheduler config (FAULTS-2026-12): H3 operator keys apart from tenant keys, config changes audited;
H4 the whole body or nothing; M11 no cross-site or rebinding requests; M14 no alias bombs, no 500 on deep nesting;
L2 finite, bounded weights; L3 the file watch sees a same-size edit with its mtime kept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from llmd_kserve.config.loader import load_config
from llmd_kserve.control.reload import config_document
from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.governance.audit import verify
from llmd_kserve.governance.keys import add_key, legacy_key
from llmd_kserve.router.app import RunningRouter, running_router

MODEL = "llama-8b-shape"
SHIPPED = Path(__file__).resolve().parents[2] / "llmd_kserve" / "config" / "shipped"
LOAD_ONLY = (SHIPPED / "load-only.yaml").read_text()
YAML = {"Content-Type": "application/yaml"}


@contextlib.asynccontextmanager
async def _router(**settings: Any) -> AsyncIterator[tuple[RunningRouter, aiohttp.ClientSession]]:
    async with running_engine(port=0, model=MODEL, time_scale=0.02) as eng, running_router(
            endpoints=[eng.url], config=settings.pop("config", "load-only"), scrape_interval=0.05, admin=True,
            **settings) as router, aiohttp.ClientSession() as session:
        yield router, session


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _weights(router: RunningRouter) -> dict[str, float | None]:
    doc = router.state.reloader.status()["config"]
    return {p["pluginRef"]: p.get("weight") for p in doc["schedulingProfiles"][0]["plugins"]}


async def test_tenant_keys_are_refused_on_operator_routes_and_config_changes_are_audited(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    keys, audit = tmp_path / "keys.yaml", tmp_path / "audit.jsonl"
    tenant, _ = add_key(keys, tenant="small", rpm=600)
    operator, op_rec = add_key(keys, tenant="ops", admin=True)
    random_cfg = (SHIPPED / "random.yaml").read_text()
    async with _router(keys_file=str(keys), api_keys=("ops-token",), audit_file=str(audit)) as (router, s):
        url = router.url
        async with s.post(url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2},
                          headers=_bearer(tenant)) as r:
            assert r.status == 200  # a tenant key still serves its tenant
        for method, path in (("GET", "/admin/config"), ("POST", "/admin/config"), ("GET", "/debug/decisions"),
                             ("GET", "/debug/endpoints"), ("GET", "/metrics")):
            async with s.request(method, url + path, data=random_cfg if method == "POST" else None,
                                 headers={**_bearer(tenant), **YAML}) as r:
                body = await r.json()
                assert r.status == 403 and body["error"]["type"] == "PermissionDeniedError", (path, body)
                assert "operator key" in body["error"]["message"]
        assert router.state.reloader.active.generation == 0
        for key in (operator, "ops-token"):  # an admin virtual key and a plain --api-keys-file token
            for path in ("/metrics", "/debug/decisions", "/admin/config"):
                async with s.get(url + path, headers=_bearer(key)) as r:
                    assert r.status == 200, (key, path)
        async with s.post(url + "/admin/config", data=random_cfg, headers={**_bearer(operator), **YAML}) as r:
            applied = await r.json()
            assert r.status == 200 and applied["generation"] == 1
        bad = LOAD_ONLY.replace("weight: 1\n", "weight: -1\n")
        async with s.post(url + "/admin/config", data=bad, headers={**_bearer("ops-token"), **YAML}) as r:
            assert r.status == 400
    rep = verify([audit])
    assert rep.ok, rep.errors
    admin = [json.loads(line) for line in audit.read_text().splitlines() if '"event":"admin"' in line]
    assert [(a["result"], a["source"]) for a in admin] == [("applied", "api"), ("refused", "api")]
    first, second = admin
    assert first["key"] == op_rec.id and first["client"] == "127.0.0.1"
    assert first["config_hash_after"] == applied["config_hash"] != first["config_hash_before"]
    assert second["key"] == legacy_key("ops-token").id and second["config_hash_before"] == applied["config_hash"]
    assert second["config_hash_after"] is None and "weight" in second["error"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("applied" in w and op_rec.id in w and applied["config_hash"] in w for w in warnings)
    for secret in (tenant, operator, "ops-token"):
        assert secret not in audit.read_text() + caplog.text


async def test_a_keys_file_alone_makes_the_admin_api_need_an_operator_key(tmp_path):
    keys = tmp_path / "keys.yaml"
    tenant, _ = add_key(keys, tenant="small")
    operator, _ = add_key(keys, tenant="ops", admin=True)
    async with _router(keys_file=str(keys)) as (router, s):
        for key, status in ((tenant, 403), (None, 401), (operator, 200)):
            async with s.post(router.url + "/admin/config", data=(SHIPPED / "random.yaml").read_text(),
                              headers={**(_bearer(key) if key else {}), **YAML}) as r:
                assert r.status == status, (key, await r.text())
        assert router.state.reloader.active.generation == 1


def _raw_post(port: int, body: bytes, split: int | None = None, headers: str = "Content-Type: application/yaml\r\n",
              length: int | None = None) -> tuple[int, dict[str, Any]]:
    """POST /admin/config over a plain socket: headers, then the body in one write or two 200 ms apart."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /admin/config HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: %d\r\n\r\n"
                  % (headers.encode(), len(body) if length is None else length))
        if split is None:
            s.sendall(body)
        else:
            s.sendall(body[:split])
            time.sleep(0.2)
            s.sendall(body[split:])
        raw = b""
        while b"\r\n\r\n" not in raw or len(raw.split(b"\r\n\r\n", 1)[1]) < _length(raw):
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(rest[:_length(raw)])


def _length(raw: bytes) -> int:
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 30


async def test_a_config_body_is_applied_whole_or_not_at_all():
    seven = LOAD_ONLY.replace("weight: 1\n", "weight: 7\n").encode()
    assert seven != LOAD_ONLY.encode()
    async with _router() as (router, _s):
        port = int(router.url.rsplit(":", 1)[1])
        # the body arrives in two TCP writes, cut right after "weight: 7"[:-1]
        status, body = await asyncio.to_thread(_raw_post, port, seven, seven.index(b"weight: 7") + 8)
        assert status == 200 and body["generation"] == 1, body
        weights = _weights(router)
        assert weights["active-request-scorer"] == 7 and "max-score-picker" in weights
        # more than 64 KiB in one write: every byte counts (the last line sets the weight)
        big = (LOAD_ONLY.replace("weight: 1\n", "weight: 100\n").replace("plugins:\n", "#" + "x" * 70_000 + "\nplugins:\n", 1))
        status, body = await asyncio.to_thread(_raw_post, port, big.encode())
        assert status == 200 and _weights(router)["active-request-scorer"] == 100, body
        # over the limit: 413 before reading it
        status, body = await asyncio.to_thread(_raw_post, port, b"x" * 10, None,
                                               "Content-Type: application/yaml\r\n", 2 << 20)
        assert status == 413 and body["error"]["type"] == "RequestTooLargeError"
        assert router.state.reloader.active.generation == 2


async def test_cross_site_and_rebinding_requests_are_refused():
    csrf = (SHIPPED / "random.yaml").read_text()
    async with _router() as (router, s):  # no keys: loopback clients only
        url = router.url
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
            headers = {"Content-Type": ctype} if ctype else {}
            async with s.post(url + "/admin/config", data=csrf.encode(), headers=headers,
                              skip_auto_headers=("Content-Type",)) as r:
                assert r.status == 415, (ctype, await r.text())
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "http://localhost:1"},
                        {"Host": "attacker-rebind.example"}, {"Host": f"attacker-rebind.example:{url.rsplit(':', 1)[1]}"}):
            async with s.post(url + "/admin/config", data=csrf, headers={**YAML, **headers}) as r:
                assert r.status == 403 and r.headers["Content-Type"].startswith("application/json"), headers
            async with s.get(url + "/admin/config", headers=headers) as r:
                assert r.status == 403, headers
        async with s.options(url + "/admin/config", headers={
                "Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type"}) as r:
            assert r.status >= 400 and not any(h.lower().startswith("access-control-allow") for h in r.headers)
        assert router.state.reloader.active.generation == 0
        host = url.removeprefix("http://")
        async with s.post(url + "/admin/config", data=csrf, headers={**YAML, "Origin": url}) as r:
            assert r.status == 200  # the router's own origin (a page it served) is not foreign
        async with s.get(url + "/admin/config", headers={"Host": host.replace("127.0.0.1", "localhost")}) as r:
            assert r.status == 200


def _bomb(levels: int, width: int) -> str:
    """``faults-2026-12/bomb.py``: ``levels`` levels of ``width`` aliases of the level below."""
    defs = [f"    l{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    return "\n".join(["apiVersion: inference.networking.x-k8s.io/v1alpha1", "kind: EndpointPickerConfig",
                      "plugins:", "- type: queue-scorer", "  parameters:", '    l0: &a0 ["lol"]', *defs,
                      "schedulingProfiles:", "- name: default", "  plugins:", "  - pluginRef: queue-scorer", ""])


async def test_alias_bombs_and_deep_nesting_are_refused_with_400(tmp_path):
    cfg = tmp_path / "router.yaml"
    cfg.write_text(LOAD_ONLY)
    async with _router(config=str(cfg), config_poll_interval=0.05) as (router, s):
        async with s.post(router.url + "/admin/config", data=_bomb(5, 10), headers=YAML) as r:
            err = (await r.json())["error"]
            assert r.status == 400 and "alias" in err["message"] and err["param"].startswith("body:")
        deep = {"apiVersion": "inference.networking.x-k8s.io/v1alpha1", "kind": "EndpointPickerConfig",
                "plugins": [{"type": "queue-scorer", "parameters": {"x": None}}],
                "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "queue-scorer"}]}]}
        for body, ctype in (('{"a":' * 5000 + "1" + "}" * 5000, "application/json"),
                            ("[" * 5000 + "]" * 5000, "application/json"),
                            ("a: " + "[" * 5000 + "]" * 5000, "application/yaml"),
                            ("".join(f"{'  ' * i}k{i}:\n" for i in range(200)) + "  " * 200 + "v: 1\n",
                             "application/yaml"),
                            (json.dumps(deep).replace("null", '{"y":' * 40 + "1" + "}" * 40), "application/json")):
            async with s.post(router.url + "/admin/config", data=body, headers={"Content-Type": ctype}) as r:
                err = (await r.json())["error"]
                assert r.status == 400 and ("nest" in err["message"] or "depth" in err["message"]), err
        cfg.write_text(_bomb(5, 10))  # the file watch takes the same path
        for _ in range(400):
            if router.state.reloader.last_error["source"] != "api":
                break
            await asyncio.sleep(0.025)
        err = router.state.reloader.last_error
        assert err["source"] == f"file:{cfg}" and "alias" in err["message"] and err["param"].startswith(f"{cfg}:")
        assert router.state.reloader.active.generation == 0
        async with s.get(router.url + "/health") as r:
            assert r.status == 200


async def test_infinite_and_huge_weights_are_refused():
    doc = config_document(load_config("load-only"))
    async with _router() as (router, s):
        for text in (LOAD_ONLY.replace("weight: 1\n", "weight: .inf\n"),
                     LOAD_ONLY.replace("weight: 1\n", "weight: 1e400\n"),
                     LOAD_ONLY.replace("weight: 1\n", "weight: 1e9\n")):
            async with s.post(router.url + "/admin/config", data=text, headers=YAML) as r:
                err = (await r.json())["error"]
                assert r.status == 400 and err["param"] == "schedulingProfiles[0].plugins[3].weight", err
        doc["plugins"].append({"type": "inflight-load-producer", "parameters": {"requestTimeoutS": "inf"}})
        async with s.post(router.url + "/admin/config", json=doc) as r:
            err = (await r.json())["error"]
            assert r.status == 400 and err["param"] == f"plugins[{len(doc['plugins']) - 1}].parameters.requestTimeoutS"
        assert router.state.reloader.active.generation == 0


async def test_a_same_size_edit_with_its_mtime_kept_is_applied(tmp_path):
    target = tmp_path / "v1.yaml"
    target.write_text(LOAD_ONLY.replace("weight: 1\n", "weight: 4\n"))
    link = tmp_path / "current.yaml"
    link.symlink_to(target)
    audit = tmp_path / "audit.jsonl"
    async with _router(config=str(link), config_poll_interval=0.05, audit_file=str(audit)) as (router, _s):
        assert _weights(router)["active-request-scorer"] == 4
        st = os.stat(target)
        target.write_text(LOAD_ONLY.replace("weight: 1\n", "weight: 5\n"))  # same size
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # what cp -p does
        assert os.stat(target).st_size == st.st_size and os.stat(target).st_mtime_ns == st.st_mtime_ns
        for _ in range(400):
            if router.state.reloader.active.generation:
                break
            await asyncio.sleep(0.025)
        assert router.state.reloader.active.generation == 1 and _weights(router)["active-request-scorer"] == 5
        assert router.state.reloader.active.source == f"file:{link}"
    recs = [json.loads(line) for line in audit.read_text().splitlines()]
    admin = [r for r in recs if r["event"] == "admin"]
    assert len(admin) == 1 and admin[0]["source"] == f"file:{link}" and admin[0]["key"] is None
    assert admin[0]["result"] == "applied" and admin[0]["config_hash_after"] == router.state.reloader.active.hash
    assert yaml.safe_load(target.read_text())  # the file itself is untouched


_CSRF_PAGE = """<!doctype html><pre id=out>start</pre><script>
const cfg = %s; const out = document.getElementById("out");
async function send(mode, type) {
  try { const r = await fetch("%s/admin/config", {method: "POST", mode: mode, headers: {"Content-Type": type}, body: cfg});
        out.textContent += " " + type + ":" + r.status; }
  catch (e) { out.textContent += " " + type + ":failed"; }
}
(async () => { await send("no-cors", "text/plain"); await send("no-cors", "application/x-www-form-urlencoded");
               await send("cors", "application/yaml"); out.textContent += " done"; })();
</script>"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs a chromium binary")
async def test_a_page_on_another_origin_cannot_reconfigure_the_router_in_a_real_browser(tmp_path):
    """What the red team did with Chromium: a page on http://localhost:P posts a config to the router on
    127.0.0.1 (another origin) as no-cors text/plain and form data, and as a CORS application/yaml request."""
    cfg = (SHIPPED / "random.yaml").read_text()
    async with _router() as (router, _s):
        async def index(_: web.Request) -> web.Response:
            return web.Response(text=_CSRF_PAGE % (json.dumps(cfg), router.url), content_type="text/html")

        page = web.Application()
        page.router.add_get("/", index)
        runner = web.AppRunner(page)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            proc = await asyncio.create_subprocess_exec(
                "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                "--dump-dom", f"http://localhost:{runner.addresses[0][1]}/", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL)
            dom = (await asyncio.wait_for(proc.communicate(), 60))[0].decode()
        finally:
            await runner.cleanup()
        assert " done" in dom  # the page ran every request
        assert router.state.reloader.active.generation == 0
