"""Hot standby: two EPPs elect a leader on a Lease (the fake API over HTTP, the real ``CoordinationV1Api``); both
run the data path warm, only the leader is ready and serves picks; when the leader is lost the standby takes the
Lease and serves. The failover time (leader lost → first pick served by the new leader) is measured and reported,
not asserted against a threshold."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmd_kserve.epp.server import EppSettings, RunningEpp, running_epp
from llmd_kserve.kube.fake_server import FakeApiServer
from llmd_kserve.kube.leader import LeaseSettings
from tests.epp.test_epp_exchange import body, headers
from tests.epp.upstream import running_upstream

FAST = {"lease_duration": 2, "renew_deadline": 1.5, "retry_period": 0.2}
BODY = b'{"model": "m", "prompt": "hello", "max_tokens": 4}'
SERVING = health_pb2.HealthCheckResponse.SERVING


class SeverableApi:
    """The lease API as one replica reaches it; ``cut`` plays that replica's death (no renewal, no release)."""

    def __init__(self, api: Any) -> None:
        self.api, self.cut = api, False

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.api, name)

        def call(*args: Any, **kw: Any) -> Any:
            if self.cut:
                raise ConnectionRefusedError("replica is gone")
            return fn(*args, **kw)

        return call


async def pick(address: str) -> str | None:
    """One ext_proc exchange (headers + body); the picked ``host:port``, or None when the EPP refused the stream."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.ExternalProcessorStub(channel).Process(iter([headers(), body(BODY, True)]))
        try:
            resp = await asyncio.wait_for(call.read(), 5)
        except grpc.aio.AioRpcError as exc:  # UNAVAILABLE; or a write that raced the abort failed first (INTERNAL)
            assert exc.code() == grpc.StatusCode.UNAVAILABLE or "execute_batch" in (exc.debug_error_string() or ""), exc
            return None
        finally:
            call.cancel()
        if resp is grpc.aio.EOF:
            return None
        mutation = resp.request_headers.response.header_mutation.set_headers
        found = {h.header.key: h.header.raw_value.decode() for h in mutation}
        return found.get("x-gateway-destination-endpoint")


async def readiness(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        r = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="readiness"))
        return r.status


@contextlib.asynccontextmanager
async def pair(srv: FakeApiServer, endpoints: list[str]) -> AsyncIterator[tuple[RunningEpp, RunningEpp, SeverableApi]]:
    """EPP ``a`` (started first, so it leads) and ``b``; ``a``'s lease API can be cut."""
    cut = SeverableApi(srv.coordination_api())

    def settings(identity: str) -> EppSettings:
        return EppSettings(drain_timeout=1.0, lease=LeaseSettings("epp", "llm", identity, **FAST))

    async with running_epp(endpoints=endpoints, config="round-robin", scrape_interval=0.1, epp=settings("a"),
                           lease_api=cut) as a:
        for _ in range(100):
            if a.server.leading:
                break
            await asyncio.sleep(0.05)
        async with running_epp(endpoints=endpoints, config="round-robin", scrape_interval=0.1, epp=settings("b"),
                               lease_api=srv.coordination_api()) as b:
            yield a, b, cut


async def first_pick(address: str, timeout: float = 30.0) -> tuple[str, float]:
    """Ask ``address`` for a pick until it serves one; (the pick, when)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await pick(address)
        if got is not None:
            return got, time.monotonic()
        await asyncio.sleep(0.02)
    raise AssertionError(f"{address} served no pick within {timeout} s")


@pytest.mark.parametrize("loss", ["crash", "drain"])
async def test_the_standby_is_warm_not_ready_and_takes_over_when_the_leader_is_lost(loss, record_property) -> None:
    async with running_upstream() as u1, running_upstream() as u2:
        with FakeApiServer() as srv:
            async with pair(srv, [u1.url, u2.url]) as (a, b, cut):
                await asyncio.sleep(0.6)  # b has read the Lease a few times and scraped the engines
                assert a.server.leading and not b.server.leading
                assert await readiness(a.grpc_address) == SERVING
                assert await readiness(b.grpc_address) != SERVING
                assert await pick(a.grpc_address) in {u1.url[7:], u2.url[7:]}
                assert await pick(b.grpc_address) is None  # a standby refuses a stream that reaches it
                assert b.server.metrics.stream_errors.labels("standby")._value.get() == 1
                states = b.state.endpoint_states()  # the standby's data path is warm: engines scraped
                assert len(states) == 2 and not any(s.metrics.stale for s in states)
                assert b.server.metrics.leader._value.get() == 0 and a.server.metrics.leader._value.get() == 1

                lost = time.monotonic()
                draining = None
                if loss == "crash":  # no renewal and no release: b waits out a's lease duration
                    cut.cut = True
                    await a.server.stop(0)
                else:  # SIGTERM: a releases the Lease and serves on until b holds it, then drains
                    draining = asyncio.create_task(a.server.drain(0.5))
                    await asyncio.sleep(0)
                    assert await pick(a.grpc_address) is not None  # no gap: a still picks while b takes over
                target, served = await first_pick(b.grpc_address)
                failover = served - lost
                print(f"\nEPP failover ({loss}, lease {FAST}): {failover:.3f} s from leader loss to the new leader's "
                      "first pick")
                record_property(f"failover_{loss}_s", round(failover, 3))
                if draining is not None:
                    await draining
                    assert srv.fake.objects[("Lease", "llm", "epp")]["spec"]["holderIdentity"] == "b"
                    assert await readiness(a.grpc_address) != SERVING  # after the hand-over, a drains
                    await a.server.stop(0)
                assert target in {u1.url[7:], u2.url[7:]}
                assert b.server.leading and await readiness(b.grpc_address) == SERVING
                spec = srv.fake.objects[("Lease", "llm", "epp")]["spec"]
                assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
                assert b.server.metrics.leader_transitions._value.get() == 1
