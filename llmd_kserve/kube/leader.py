"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's ``leaderelection`` semantics.

One replica holds the Lease (``holderIdentity``) and renews it (``renewTime``) every ``retry_period``; the others
read it every ``retry_period`` and take it over only once it has gone unrenewed for the holder's own
``leaseDurationSeconds``, timed on their own clock from the moment they last saw the record change (so clock skew
between replicas does not matter). Every write is a ``replace`` carrying the ``resourceVersion`` that was read: of two
replicas racing for an expired Lease, the API server lets exactly one through and answers the other 409. A leader
that cannot renew within ``renew_deadline`` stops leading on its own, before anyone else may take over. A leader that
stops cleanly releases the Lease (empty holder), so a standby takes over at its next retry instead of waiting.

The API is a parameter: a ``CoordinationV1Api`` (``kubernetes.client``) or anything with its ``read``, ``create`` and
``replace_namespaced_lease`` methods. :meth:`LeaderElector.try_acquire_or_renew` is one blocking step;
:meth:`LeaderElector.run` drives it from asyncio (each API call in a worker thread).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmd_kserve.errors import ConfigError

log = logging.getLogger(__name__)
JITTER = 1.2
"""client-go's ``JitterFactor``: a retry waits ``retry_period`` plus up to this fraction of it more."""


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """Which Lease, who we are, and the timing (client-go's defaults: 15 s, 10 s, 2 s)."""

    name: str
    namespace: str
    identity: str
    lease_duration: int = 15
    """Seconds a standby waits, from when it last saw the Lease renewed, before it may take over."""
    renew_deadline: float = 10.0
    """Seconds the leader keeps trying to renew before it gives leadership up."""
    retry_period: float = 2.0
    """Seconds between tries (renewals by the leader, reads by a standby)."""

    def __post_init__(self) -> None:
        if not self.name or not self.namespace or not self.identity:
            raise ConfigError("the lease name, namespace and identity must not be empty", "lease_name")
        if not isinstance(self.lease_duration, int) or self.lease_duration < 1:
            raise ConfigError(f"must be a whole number of seconds >= 1, got {self.lease_duration}", "lease_duration")
        if self.retry_period <= 0:
            raise ConfigError(f"must be > 0, got {self.retry_period}", "retry_period")
        if not self.lease_duration > self.renew_deadline:
            raise ConfigError(f"the lease duration ({self.lease_duration}) must exceed the renew deadline "
                              f"({self.renew_deadline})", "renew_deadline")
        if not self.renew_deadline > JITTER * self.retry_period:
            raise ConfigError(f"the renew deadline ({self.renew_deadline}) must exceed {JITTER} x the retry period "
                              f"({self.retry_period})", "renew_deadline")


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The Lease spec fields leader election reads and writes."""

    holder: str
    duration: int
    acquire_time: dt.datetime | str | None
    renew_time: dt.datetime | str | None
    transitions: int


def _get(obj: Any, snake: str, camel: str) -> Any:
    return obj.get(camel) if isinstance(obj, dict) else getattr(obj, snake, None)


def _record(lease: Any) -> tuple[LeaseRecord, str | None]:
    """(the record, its resourceVersion) of a V1Lease (or its dict form)."""
    spec = _get(lease, "spec", "spec") or {}
    meta = _get(lease, "metadata", "metadata") or {}
    return LeaseRecord(holder=_get(spec, "holder_identity", "holderIdentity") or "",
                       duration=int(_get(spec, "lease_duration_seconds", "leaseDurationSeconds") or 0),
                       acquire_time=_get(spec, "acquire_time", "acquireTime"),
                       renew_time=_get(spec, "renew_time", "renewTime"),
                       transitions=int(_get(spec, "lease_transitions", "leaseTransitions") or 0)), \
        _get(meta, "resource_version", "resourceVersion")


def _body(name: str, namespace: str, rec: LeaseRecord, version: str | None) -> dict[str, Any]:
    def stamp(t: dt.datetime | str | None) -> str | None:
        return t if t is None or isinstance(t, str) else t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if version is not None:
        meta["resourceVersion"] = version
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": rec.holder, "leaseDurationSeconds": rec.duration,
                     "acquireTime": stamp(rec.acquire_time), "renewTime": stamp(rec.renew_time),
                     "leaseTransitions": rec.transitions}}


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status", None) if type(exc).__name__ == "ApiException" else None


class LeaderElector:
    """One candidate for the Lease. ``on_change(is_leader)`` is called on every change of leadership."""

    def __init__(self, api: Any, settings: LeaseSettings, *, on_change: Callable[[bool], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 rng: random.Random | None = None) -> None:
        self.api, self.settings, self._on_change = api, settings, on_change
        self._clock, self._wall, self._rng = clock, wall, rng or random.Random()
        self.observed: LeaseRecord | None = None
        self.observed_at = 0.0
        """When (``clock``) the record last changed as seen from here."""
        self.is_leader = False
        self.last_renewed = 0.0
        """When (``clock``) this candidate last wrote the Lease successfully as its holder."""
        self.transitions = 0
        """Times this candidate became leader."""

    # --- one step -----------------------------------------------------------------------------------------------
    def try_acquire_or_renew(self) -> bool:
        """Read the Lease; create it, renew it (ours) or take it over (expired or released). True: we hold it now.
        A write that loses a race (409) or an API failure is False, never raised."""
        s, now = self.settings, self._wall()
        try:
            lease = self.api.read_namespaced_lease(s.name, s.namespace)
        except Exception as exc:  # noqa: BLE001 - every failure is a failed try, as in client-go
            if _status(exc) != 404:
                log.debug("lease %s/%s: read failed: %s", s.namespace, s.name, exc)
                return False
            mine = LeaseRecord(s.identity, s.lease_duration, now, now, 0)
            try:
                self.api.create_namespaced_lease(s.namespace, _body(s.name, s.namespace, mine, None))
            except Exception as exc2:  # noqa: BLE001 - 409: another candidate created it first
                log.debug("lease %s/%s: create failed: %s", s.namespace, s.name, exc2)
                return False
            self._observe(mine)
            return self._won()
        old, version = _record(lease)
        if old != self.observed:
            self._observe(old)
        if old.holder and old.holder != s.identity and self.observed_at + old.duration > self._clock():
            return False  # held by another, and not yet expired by its own duration
        mine = LeaseRecord(s.identity, s.lease_duration,
                           old.acquire_time if old.holder == s.identity else now, now,
                           old.transitions if old.holder == s.identity else old.transitions + 1)
        try:
            self.api.replace_namespaced_lease(s.name, s.namespace, _body(s.name, s.namespace, mine, version))
        except Exception as exc:  # noqa: BLE001 - 409: someone else wrote it since our read
            log.debug("lease %s/%s: update failed: %s", s.namespace, s.name, exc)
            return False
        self._observe(mine)
        return self._won()

    def holder(self) -> str | None:
        """Who holds the Lease now ("" when released; None when it cannot be read)."""
        s = self.settings
        try:
            return _record(self.api.read_namespaced_lease(s.name, s.namespace))[0].holder
        except Exception:  # noqa: BLE001 - unknown
            return None

    def _observe(self, rec: LeaseRecord) -> None:
        self.observed, self.observed_at = rec, self._clock()

    def _won(self) -> bool:
        self.last_renewed = self._clock()
        return True

    def release(self) -> bool:
        """Stop leading and give the Lease up (holder emptied, duration 1 s): a standby takes over at its next
        try instead of waiting for the Lease to expire. False: we did not hold it, or the write failed."""
        if not self.is_leader:
            return False
        self._set_leader(False)
        return self._release_lease()

    def _release_lease(self) -> bool:
        s = self.settings
        try:
            old, version = _record(self.api.read_namespaced_lease(s.name, s.namespace))
            if old.holder != s.identity:
                return False
            now = self._wall()
            self.api.replace_namespaced_lease(s.name, s.namespace, _body(
                s.name, s.namespace, LeaseRecord("", 1, now, now, old.transitions), version))
            return True
        except Exception as exc:  # noqa: BLE001 - the Lease then simply expires
            log.warning("lease %s/%s: release failed (%s); it expires in %d s", s.namespace, s.name, exc,
                        s.lease_duration)
            return False

    def _set_leader(self, leader: bool) -> None:
        if leader == self.is_leader:
            return
        self.is_leader = leader
        s = self.settings
        if leader:
            self.transitions += 1
            log.warning("lease %s/%s: %s is now the leader", s.namespace, s.name, s.identity)
        else:
            log.warning("lease %s/%s: %s stopped leading", s.namespace, s.name, s.identity)
        if self._on_change is not None:
            self._on_change(leader)

    # --- the loop -----------------------------------------------------------------------------------------------
    def _jittered(self) -> float:
        return self.settings.retry_period * (1 + self._rng.random() * (JITTER - 1))

    async def step(self) -> None:
        """One try in a worker thread, then leadership updated: gained on success; lost when the last successful
        renewal is older than ``renew_deadline``."""
        ok = await asyncio.to_thread(self.try_acquire_or_renew)
        if ok:
            self._set_leader(True)
        elif self.is_leader and (self._clock() - self.last_renewed > self.settings.renew_deadline
                                 or (self.observed is not None and self.observed.holder != self.settings.identity)):
            self._set_leader(False)

    async def run(self) -> None:
        """Try every ``retry_period`` (the leader: renew; a standby: read, take over when expired) until cancelled;
        on cancellation a leader releases the Lease."""
        try:
            while True:
                await self.step()
                await asyncio.sleep(self.settings.retry_period if self.is_leader else self._jittered())
        finally:
            if self.is_leader:
                self._set_leader(False)
                await asyncio.shield(asyncio.to_thread(self._release_lease))
