"""The P/D handoff in virtual time: the prefill leg, the KV transfer, and the fallback, as the live orchestrator does.

When the scheduler's result names a ``prefill`` endpoint (``pd-profile-handler``), :class:`ClusterSim` hands the
request to :class:`PDFlow` instead of sending it to ``target`` at once:

* the prefill leg (step 1 of :mod:`llmd_kserve.disagg.protocol`: ``max_tokens: 1``, KV to be pulled) reaches the
  prefill engine after the router hop and its front end, and runs with its blocks held (``hold_on_finish``);
* when it finishes, the prefill endpoint's in-flight charge is released (``Scheduler.on_prefill_complete``, as
  :class:`~llmd_kserve.disagg.orchestrator.PDOrchestrator` does), and the decode leg (step 3) reaches ``target``
  after the router hop, the decode front end and the KV transfer of the prompt tokens the decode engine does not
  already cache (``profile.kv_transfer_time``); it starts with the prompt computed (``remote_kv``) and the prefill
  engine frees its blocks (the pull);
* if the prefill engine refuses the leg (``http_400``) or it has not finished ``prefill_timeout_s`` after the router
  sent it (``timeout``: the router drops the connection, the engine aborts the leg), the prefill charge is released
  as failed and the original request goes to ``target``, which prefills locally; counted by reason.

The P/D deciders' own state (the predicted-TTFT decider's prefill queue) lives in the scheduler's plugins, updated by
``schedule`` and ``on_complete`` exactly as on the live path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmd_kserve.disagg.protocol import prefill_body
from llmd_kserve.types import RequestOutcome

if TYPE_CHECKING:
    from llmd_kserve.cluster_sim.sim import ClusterSim, _Live

PREFILL_LEG = "@prefill"
"""Suffix of a prefill leg's request id on the prefill engine."""
PREFILL, TIMEOUT = 4, 5
"""Event kinds (after the simulator's own): the prefill leg reaches its engine; the router's prefill timeout."""


class PDFlow:
    """The prefill legs in flight and the P/D counters of one :class:`ClusterSim` run."""

    def __init__(self, sim: ClusterSim) -> None:
        self.sim = sim
        self.legs: dict[str, _Live] = {}
        """Prefill leg id -> its request, while the leg is on the prefill engine."""
        self.transfers: list[float] = []
        """Modelled KV transfer time of each request handed from prefill to decode."""
        self.fallbacks: dict[str, int] = {}

    def start(self, rec: _Live, t: float) -> None:
        """The router sends the prefill leg of ``rec``, scheduled at ``t``."""
        sim = self.sim
        sim.push(t + sim.leg_delay(rec.n_prompt), PREFILL, rec)
        timeout = sim.options.prefill_timeout_s
        if timeout is not None:
            sim.push(t + sim.options.router_delay + timeout, TIMEOUT, rec)

    def arrive(self, rec: _Live, t: float) -> None:
        """The prefill leg reaches the prefill engine."""
        if rec.fallback is not None:  # timed out before it got there
            return
        sim = self.sim
        i = sim.index_of[rec.sched.prefill]  # type: ignore[index]
        leg = rec.spec.request_id + PREFILL_LEG
        step1 = prefill_body(rec.llm.body)  # what the router sends the prefill engine: max_tokens 1, KV to be pulled
        try:
            sim.engines[i].core.add_request(leg, rec.llm.token_ids or (), step1["max_tokens"],
                                            hold_on_finish=True)
        except ValueError:
            self._fallback(rec, t, "http_400")
            return
        self.legs[leg] = rec
        sim.kick(i, t)

    def finished(self, i: int, leg: str, t: float) -> None:
        """Prefill leg ``leg`` finished on engine ``i``: release its charge, transfer the KV, send the decode leg."""
        rec = self.legs.pop(leg, None)
        if rec is None:  # aborted after its last step was scheduled (timeout): the abort freed its blocks
            return
        sim, prof = self.sim, self.sim.profile
        rec.held = (i, leg)
        dec = sim.engines[sim.index_of[rec.sched.target]].core
        tokens = rec.llm.token_ids or ()
        local = len(dec.pool.lookup(dec.block_hashes(tokens), (len(tokens) - 1) // dec.block_size))
        xfer = prof.kv_transfer_time(len(tokens) - local * dec.block_size, sim.options.kv_link_gbps)
        self.transfers.append(xfer)
        self._release(rec, ok=True)
        sim.push(t + sim.leg_delay(rec.n_prompt) + xfer, sim.DELIVER, rec.spec.request_id)

    def timeout(self, rec: _Live, t: float) -> None:
        """The router's prefill timeout for ``rec`` expired: fall back unless the handoff already happened."""
        if rec.held is not None or rec.fallback is not None:
            return
        leg = rec.spec.request_id + PREFILL_LEG
        if self.legs.pop(leg, None) is not None:
            self.sim.engines[self.sim.index_of[rec.sched.prefill]].core.abort(leg)  # type: ignore[index]
        self._fallback(rec, t, "timeout")

    def counters(self) -> dict[str, float]:
        """``disaggregated`` (handoffs made), ``kv_transfer_s`` (their modelled transfer time), ``pd_fallbacks``."""
        return {"disaggregated": float(len(self.transfers)), "kv_transfer_s": sum(self.transfers),
                "pd_fallbacks": float(sum(self.fallbacks.values()))}

    def _fallback(self, rec: _Live, t: float, reason: str) -> None:
        rec.fallback = reason
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1
        self._release(rec, ok=False)
        sim = self.sim
        sim.push(t + sim.leg_delay(rec.n_prompt), sim.DELIVER, rec.spec.request_id)

    def _release(self, rec: _Live, ok: bool) -> None:
        """``Scheduler.on_prefill_complete``, as the orchestrator calls it: the prefill endpoint's charge goes now."""
        self.sim.scheduler.on_prefill_complete(rec.llm, rec.sched,
                                               RequestOutcome(ok=ok, prompt_tokens=rec.n_prompt if ok else 0))
