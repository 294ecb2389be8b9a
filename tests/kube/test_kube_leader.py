"""Leader election on a Lease (``kube.leader``) against the fake API (in memory, and over HTTP through the real
``CoordinationV1Api``): one holder at a time, takeover only after the holder's own lease duration, 409 on a stale
write, renew deadline, release."""

from __future__ import annotations

import asyncio
import threading

import pytest

from llmd_kserve.errors import ConfigError
from llmd_kserve.kube.fake import FakeKubeApi
from llmd_kserve.kube.fake_server import FakeApiServer
from llmd_kserve.kube.leader import LeaderElector, LeaseSettings

NS, NAME = "llm", "epp"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def settings(identity: str, duration: int = 15) -> LeaseSettings:
    return LeaseSettings(NAME, NS, identity, duration, min(10.0, duration - 1), 2.0)


def spec(fake: FakeKubeApi) -> dict:
    return fake.objects[("Lease", NS, NAME)]["spec"]


def test_first_candidate_creates_the_lease_the_second_waits_until_it_expires_by_the_holders_duration() -> None:
    fake, clock = FakeKubeApi(), Clock()
    a = LeaderElector(fake, settings("a", duration=15), clock=clock)
    b = LeaderElector(fake, settings("b", duration=5), clock=clock)  # b's own (shorter) duration does not count
    assert a.try_acquire_or_renew() and spec(fake)["holderIdentity"] == "a" and spec(fake)["leaseTransitions"] == 0
    assert not b.try_acquire_or_renew()
    clock.t += 14.9
    assert not b.try_acquire_or_renew()  # a has not renewed, but 15 s (a's duration) have not passed
    clock.t += 0.2
    assert b.try_acquire_or_renew()
    assert spec(fake)["holderIdentity"] == "b" and spec(fake)["leaseTransitions"] == 1
    assert spec(fake)["leaseDurationSeconds"] == 5


def test_renewals_keep_the_standby_out_and_keep_acquire_time() -> None:
    fake, clock = FakeKubeApi(), Clock()
    a, b = LeaderElector(fake, settings("a"), clock=clock), LeaderElector(fake, settings("b"), clock=clock)
    assert a.try_acquire_or_renew()
    acquired = spec(fake)["acquireTime"]
    for _ in range(20):  # 40 s of renewals every 2 s: b sees the record change each time
        clock.t += 2
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
    assert spec(fake)["holderIdentity"] == "a" and spec(fake)["acquireTime"] == acquired
    assert spec(fake)["renewTime"] != acquired and spec(fake)["leaseTransitions"] == 0


def test_a_write_with_a_stale_resource_version_is_a_409_and_the_race_has_one_winner() -> None:
    fake, clock = FakeKubeApi(), Clock()
    assert LeaderElector(fake, settings("old"), clock=clock).try_acquire_or_renew()
    stale = fake.read_namespaced_lease(NAME, NS)
    clock.t += 20  # expired for everyone
    b, c = LeaderElector(fake, settings("b"), clock=clock), LeaderElector(fake, settings("c"), clock=clock)
    b.try_acquire_or_renew()  # b observes it first (its clock starts), then it is expired for b and c alike
    c.try_acquire_or_renew()
    clock.t += 20
    results: dict[str, bool] = {}
    barrier = threading.Barrier(2)

    def race(e: LeaderElector) -> None:
        barrier.wait()
        results[e.settings.identity] = e.try_acquire_or_renew()

    threads = [threading.Thread(target=race, args=(e,)) for e in (b, c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [k for k, v in results.items() if v]
    assert len(winners) == 1 and spec(fake)["holderIdentity"] == winners[0]
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as err:
        fake.replace_namespaced_lease(NAME, NS, stale)
    assert err.value.status == 409


async def test_a_leader_that_cannot_renew_stops_leading_after_the_renew_deadline() -> None:
    fake, clock = FakeKubeApi(), Clock()
    changes: list[bool] = []
    a = LeaderElector(fake, settings("a"), clock=clock, on_change=changes.append)
    await a.step()
    assert a.is_leader and changes == [True]
    fake.unreachable = True
    clock.t += 9
    await a.step()
    assert a.is_leader  # 9 s without a renewal: within the 10 s deadline
    clock.t += 1.5
    await a.step()
    assert not a.is_leader and changes == [True, False]


async def test_a_leader_that_sees_another_holder_stops_at_once() -> None:
    fake, clock = FakeKubeApi(), Clock()
    a, b = LeaderElector(fake, settings("a"), clock=clock), LeaderElector(fake, settings("b"), clock=clock)
    await a.step()
    await b.step()  # b first sees a's record now: its 15 s count from here
    clock.t += 16
    await b.step()  # a paused (e.g. a long GC) past its lease: b took over
    assert b.is_leader
    await a.step()
    assert not a.is_leader and spec(fake)["holderIdentity"] == "b"


async def test_release_empties_the_holder_and_a_standby_takes_over_at_its_next_try() -> None:
    fake, clock = FakeKubeApi(), Clock()
    a, b = LeaderElector(fake, settings("a"), clock=clock), LeaderElector(fake, settings("b"), clock=clock)
    await a.step()
    await b.step()
    assert not b.is_leader
    assert a.release() and not a.is_leader and spec(fake)["holderIdentity"] == ""
    await b.step()  # no clock advance: a released it
    assert b.is_leader and spec(fake)["leaseTransitions"] == 1


def test_settings_follow_client_go_validation() -> None:
    with pytest.raises(ConfigError, match="renew deadline"):
        LeaseSettings(NAME, NS, "a", 10, 10.0, 2.0)
    with pytest.raises(ConfigError, match="retry period"):
        LeaseSettings(NAME, NS, "a", 3, 2.0, 2.0)
    with pytest.raises(ConfigError, match="whole number"):
        LeaseSettings(NAME, NS, "a", 0, 0.5, 0.1)
    LeaseSettings(NAME, NS, "a", 2, 1.5, 0.25)  # shorter than client-go's defaults is allowed


async def test_two_electors_through_the_real_client_over_http_fail_over_on_release() -> None:
    with FakeApiServer() as srv:
        fast = {"lease_duration": 2, "renew_deadline": 1.5, "retry_period": 0.1}
        a = LeaderElector(srv.coordination_api(), LeaseSettings(NAME, NS, "a", **fast))
        b = LeaderElector(srv.coordination_api(), LeaseSettings(NAME, NS, "b", **fast))
        ta = asyncio.create_task(a.run())
        await asyncio.sleep(0.3)
        tb = asyncio.create_task(b.run())
        await asyncio.sleep(0.5)
        assert a.is_leader and not b.is_leader
        ta.cancel()  # a stops cleanly: releases the lease
        await asyncio.gather(ta, return_exceptions=True)
        for _ in range(100):
            if b.is_leader:
                break
            await asyncio.sleep(0.05)
        assert b.is_leader and srv.fake.objects[("Lease", NS, NAME)]["spec"]["holderIdentity"] == "b"
        tb.cancel()
        await asyncio.gather(tb, return_exceptions=True)
