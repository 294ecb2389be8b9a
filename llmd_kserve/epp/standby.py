"""The EPP's hot standby: whether this replica serves picks, decided by leader election on a Lease
(:mod:`llmd_kserve.kube.leader`), and the hand-over of a leader that stops.

Every replica runs the whole data path; only the leader serves. A leader that drains releases the Lease and goes on
serving until a standby holds it, then ``handover_s`` more, so the gateway's health checks see the new leader before
the old one turns NOT_SERVING (no gap in picks on a rolling update).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from llmd_kserve.epp.metrics import EppMetrics
from llmd_kserve.kube.leader import LeaderElector, LeaseSettings

log = logging.getLogger(__name__)


class Standby:
    """``serving`` while this replica holds the Lease; ``refresh()`` (the health service) is called on each
    change."""

    def __init__(self, api: Any, lease: LeaseSettings, metrics: EppMetrics, refresh: Callable[[], Any],
                 handover_s: float = 1.0) -> None:
        self.lease, self.metrics, self.refresh, self.handover_s = lease, metrics, refresh, handover_s
        self.elector = LeaderElector(api, lease, on_change=self._changed)
        self.serving = False
        self._task: asyncio.Task[None] | None = None
        self._handing_over = False

    def _changed(self, leader: bool) -> None:
        """On the loop, when the Lease is won or lost: serve (or stop), tell the health service now."""
        if self._handing_over:  # released on purpose: serving goes on until a standby holds the Lease
            return
        self.serving = leader
        self.metrics.leader.set(1 if leader else 0)
        if leader:
            self.metrics.leader_transitions.inc()
        self.refresh()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.elector.run())

    async def stop(self) -> None:
        """Stop electing (idempotent); a leader releases the Lease on the way."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def handover(self) -> str | None:
        """Stop electing; a leader releases the Lease, then goes on serving until another replica holds it plus
        ``handover_s`` (at most ``renew_deadline`` in all: without a standby it stops anyway). The new holder's
        identity, or None."""
        leading = self.elector.is_leader
        self._handing_over = leading
        await self.stop()
        if not leading:
            return None
        lease, loop = self.lease, asyncio.get_running_loop()
        deadline = loop.time() + lease.renew_deadline
        successor = None
        while loop.time() < deadline:
            holder = await asyncio.to_thread(self.elector.holder)
            if holder and holder != lease.identity:
                successor = holder
                await asyncio.sleep(min(self.handover_s, max(0.0, deadline - loop.time())))
                break
            await asyncio.sleep(lease.retry_period / 2)
        log.warning("handed the lease over to %s", successor or "nobody (no standby took it)")
        self.metrics.leader.set(0)  # (streams that still come while it drains are served)
        return successor
