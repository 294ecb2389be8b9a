"""``llmd-kserve epp``: an EPP process with its endpoints from a list, a watched file or Kubernetes discovery.

An InferencePool's ``targetPorts`` (data parallelism: several engine ranks per pod, one port each) turn every pod
into one endpoint per port; rank ``i`` publishes KV events on ``kv_events_port + i`` (vLLM's DP port offset).
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from llmd_kserve.aio import run, stop_on_signals
from llmd_kserve.control.endpoints import load_endpoints_file
from llmd_kserve.control.settings import RouterSettings
from llmd_kserve.epp.server import EppServer, EppSettings, epp_runtime
from llmd_kserve.errors import ConfigError
from llmd_kserve.types import Endpoint, EndpointId

log = logging.getLogger(__name__)


def expand_target_ports(endpoints: Sequence[Endpoint], ports: Sequence[int],
                        kv_events_port: int | None = 5557) -> list[Endpoint]:
    """Each endpoint (one per pod) → one endpoint per target port (``ports[0]`` is the discovered one)."""
    if len(ports) <= 1:
        return list(endpoints)
    out: list[Endpoint] = []
    for ep in endpoints:
        parts = urlsplit(ep.id)
        host = parts.netloc.rsplit(":", 1)[0]
        for rank, port in enumerate(ports):
            kv = f"tcp://{host}:{kv_events_port + rank}" if ep.kv_events and kv_events_port else None
            out.append(replace(ep, id=EndpointId(f"{parts.scheme}://{host}:{port}"), kv_events=kv,
                               labels={**ep.labels, "rank": str(rank)}))
    return out


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def serve(*, host: str = "0.0.0.0", grpc_port: int = 9002, metrics_port: int = 9090, pick_port: int | None = None,
          config: str = "default",
          endpoints: Sequence[str] | None = None, endpoints_file: str | None = None,
          discover_selector: str | None = None, discover_namespace: str | None = None,
          target_ports: Sequence[int] = (8000,), kv_events_port: int = 5557, epp: EppSettings | None = None,
          router: RouterSettings | None = None, lease_api: Any = None, **settings: Any) -> int:
    """Run the EPP until SIGINT/SIGTERM, then drain (readiness NOT_SERVING, a leader gives its Lease up, open
    streams finish) and exit. With ``epp.lease`` (hot standby) the Lease is reached through ``lease_api``, by
    default the cluster's ``CoordinationV1Api`` (in-cluster config, else the kubeconfig)."""
    if not endpoints and not endpoints_file and not discover_selector:
        raise ConfigError("give --endpoints URL[,URL...], --endpoints-file FILE or --discover-selector", "endpoints")
    if endpoints_file:
        load_endpoints_file(endpoints_file)  # a missing or bad file fails now
    s = router or RouterSettings(config=config, **settings)
    state = epp_runtime(s, endpoints or (), endpoints_file, epp.response_mode if epp is not None else "full",
                        pick_port is not None)
    for ep in state.pool.snapshot:
        if not _is_ip(urlsplit(ep.id).hostname or ""):
            log.warning("endpoint %s is not an ip:port: Envoy's ORIGINAL_DST cluster cannot dial a host name", ep.id)
    if epp is not None and epp.lease is not None and lease_api is None:
        from llmd_kserve.kube.api import coordination_api

        lease_api = coordination_api()
    server = EppServer(state, epp, lease_api)

    async def main() -> None:
        stop = stop_on_signals()
        await server.start(host, grpc_port, metrics_port, pick_port)
        discovery = None
        if discover_selector:
            from llmd_kserve.kube.discovery import watch_endpoints

            on_change: Callable[[list[Endpoint]], Any] = lambda eps: state.set_endpoints(  # noqa: E731
                expand_target_ports(eps, target_ports, kv_events_port))
            discovery = asyncio.create_task(watch_endpoints(on_change, selector=discover_selector,
                                                            namespace=discover_namespace, port=target_ports[0],
                                                            kv_events_port=kv_events_port))
            discovery.add_done_callback(lambda t: t.cancelled() or t.exception() is None or stop.set())
        gc.freeze()
        print(f"llmd-kserve epp: ext_proc + health on {host}:{server.grpc_port}, metrics on "
              f"http://{host}:{server.metrics_port}/metrics (config {s.config}, {len(state.pool.snapshot)} endpoints, "
              f"response mode {server.settings.response_mode})"
              + (f", HTTP pick on {host}:{server.pick_port}" if pick_port is not None else "")
              + (f", leader election on lease {lease.namespace}/{lease.name} as {lease.identity}"
                 if (lease := server.settings.lease) is not None else ""), flush=True)
        try:
            await stop.wait()
            drained = await server.drain()
            log.info("drained: %s", "all streams done" if drained else "timeout, closing open streams")
        finally:
            if discovery is not None:
                discovery.cancel()
            await server.stop(1.0)
        if discovery is not None and discovery.done() and not discovery.cancelled() and discovery.exception():
            raise discovery.exception()  # type: ignore[misc]

    run(main())
    return 0
