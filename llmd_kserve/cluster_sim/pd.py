"""The P/D handoff in virtual time: the prefill leg, the KV transfer, and the fallback, as the live orchestrator does.

When the scheduler's result names a ``prefill`` endpoint (``pd-profile-handler``), ``ClusterSim`` hands the
request to :class:`PDFlow` instead of sending it to ``target`` at once:

* the prefill leg (step 1 of :mod:`llmd_kserve.disagg.protocol`: ``max_tokens: 1``, KV to be pulled) reaches the
  prefill engine after the router hop and its front end, and runs with its blocks held (``hold_on_finish``);
* when it finishes, the prefill endpoint's in-flight charge is released (``Scheduler.on_prefill_complete``, as
  :class:`~llmd_kserve.disagg.orchestrator.PDOrchestrator` does), and the decode leg (step 3) reaches ``target``
  after the router hop, the decode front end and the KV transfer of the prompt tokens the decode engine does not
  already cache (``profile.kv_transfer_time``); it starts with the prompt computed (``remote_kv``) and the prefill
  engine frees its blocks (the pull); engines following vLLM 0.32's rules report the prefill's cached tokens as the
  request's (``remote_prefill_cached_tokens``), 0.26's the decode's own (the pulled KV counted as cached);
* if the prefill engine refuses the leg (``http_400``) or it has not finished ``prefill_timeout_s`` after the router
  sent it (``timeout``: the router drops the connection, the engine aborts the leg), the prefill charge is released
  as failed and the original request goes to ``target``, which prefills locally; counted by reason.

The P/D deciders' own state (the predicted-TTFT decider's prefill queue) lives in the scheduler's plugins, updated by
``schedule`` and ``on_complete`` exactly as on the live path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from llmd_kserve.cluster_sim.events import Deliver, Event, LiveRequest, PrefillArrive, PrefillTimeout
from llmd_kserve.cluster_sim.options import SimOptions
from llmd_kserve.disagg.protocol import prefill_body
from llmd_kserve.engine_sim.core import EngineCore
from llmd_kserve.latency import LatencyProfile
from llmd_kserve.types import EndpointId, RequestOutcome

PREFILL_LEG = "@prefill"
"""Suffix of a prefill leg's request id on the prefill engine."""


class PDHost(Protocol):
    """What the P/D flow needs of the simulator (``ClusterSim``): its clock-ordered queue and its engines."""

    @property
    def options(self) -> SimOptions: ...
    @property
    def profile(self) -> LatencyProfile: ...
    @property
    def index_of(self) -> Mapping[EndpointId, int]: ...

    def push(self, t: float, event: Event) -> None: ...
    def kick(self, i: int, t: float) -> None: ...
    def core(self, i: int) -> EngineCore: ...
    def leg_delay(self, n_prompt: int, engine: int | None = None, t: float = 0.0) -> float: ...
    def on_prefill_complete(self, rec: LiveRequest, outcome: RequestOutcome) -> None: ...


class PDFlow:
    """The prefill legs in flight and the P/D counters of one simulator run."""

    def __init__(self, sim: PDHost) -> None:
        self.sim = sim
        self.legs: dict[str, LiveRequest] = {}
        """Prefill leg id -> its request, while the leg is on the prefill engine."""
        self.transfers: list[float] = []
        """Modelled KV transfer time of each request handed from prefill to decode."""
        self.fallbacks: dict[str, int] = {}

    def start(self, rec: LiveRequest, t: float) -> None:
        """The router sends the prefill leg of ``rec``, scheduled at ``t``."""
        sim = self.sim
        assert rec.sched.prefill is not None  # only P/D requests come here
        sim.push(t + sim.leg_delay(rec.n_prompt, sim.index_of[rec.sched.prefill], t), PrefillArrive(rec))
        timeout = sim.options.prefill_timeout_s
        if timeout is not None:
            sim.push(t + sim.options.router_delay + timeout, PrefillTimeout(rec))

    def arrive(self, rec: LiveRequest, t: float) -> None:
        """The prefill leg reaches the prefill engine."""
        if rec.fallback is not None:  # timed out before it got there
            return
        sim = self.sim
        assert rec.sched.prefill is not None  # only P/D requests come here
        i = sim.index_of[rec.sched.prefill]
        leg = rec.spec.request_id + PREFILL_LEG
        step1 = prefill_body(rec.llm.body)  # what the router sends the prefill engine: max_tokens 1, KV to be pulled
        try:
            sim.core(i).add_request(leg, rec.llm.token_ids or (), step1["max_tokens"], hold_on_finish=True)
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
        tokens = rec.llm.token_ids or ()
        decode = sim.core(sim.index_of[rec.sched.target])
        if sim.core(i).vllm_version == decode.vllm_version == "0.32":  # the decode reports the prefill's cached tokens
            rec.cached = sim.core(i).held_cached_tokens(leg)
        local = decode.cached_prefix_tokens(tokens)
        xfer = prof.kv_transfer_time(len(tokens) - local, sim.options.kv_link_gbps)
        self.transfers.append(xfer)
        self._release(rec, ok=True)
        sim.push(t + sim.leg_delay(rec.n_prompt, sim.index_of[rec.sched.target], t) + xfer, Deliver(rec.spec.request_id))

    def timeout(self, rec: LiveRequest, t: float) -> None:
        """The router's prefill timeout for ``rec`` expired: fall back unless the handoff already happened."""
        if rec.held is not None or rec.fallback is not None:
            return
        leg = rec.spec.request_id + PREFILL_LEG
        if self.legs.pop(leg, None) is not None and rec.sched.prefill is not None:
            self.sim.core(self.sim.index_of[rec.sched.prefill]).abort(leg)
        self._fallback(rec, t, "timeout")

    def counters(self) -> dict[str, float]:
        """``disaggregated`` (handoffs made), ``kv_transfer_s`` (their modelled transfer time), ``pd_fallbacks``."""
        return {"disaggregated": float(len(self.transfers)), "kv_transfer_s": sum(self.transfers),
                "pd_fallbacks": float(sum(self.fallbacks.values()))}

    def _fallback(self, rec: LiveRequest, t: float, reason: str) -> None:
        rec.fallback = reason
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1
        self._release(rec, ok=False)
        sim = self.sim
        sim.push(t + sim.leg_delay(rec.n_prompt, rec.engine, t), Deliver(rec.spec.request_id))

    def _release(self, rec: LiveRequest, ok: bool) -> None:
        """``Scheduler.on_prefill_complete``, as the orchestrator calls it: the prefill endpoint's charge goes now."""
        self.sim.on_prefill_complete(rec, RequestOutcome(ok=ok, prompt_tokens=rec.n_prompt if ok else 0))
