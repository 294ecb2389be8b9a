"""Replicas that time-share one accelerator: processor sharing of their engine steps, in virtual time.

Several vLLM servers on one GPU (small models are often served that way; ``--gpu-memory-utilization`` splits the
memory) do not split the compute: without MPS their kernels are time-sliced. Modelled as processor sharing: while
``k`` replicas of one accelerator have a step in flight, each step advances at ``1/k`` of its full speed, so a step
that would take ``d`` alone ends later whenever its neighbours are busy. A replica alone runs at full speed.
Measured effect on issue 17's pressure scenario: ``benchmarks/RESULTS.md``, "Simulator fidelity".
"""

from __future__ import annotations

from collections.abc import Sequence


class SharedAccelerators:
    """``accelerators[i]`` is replica ``i``'s accelerator. ``start``/``finish`` return every in-flight step of that
    accelerator with its (new) completion time; an earlier completion time given for a step is void (``is_due``)."""

    __slots__ = ("_of", "_left", "_since", "_due")

    def __init__(self, accelerators: Sequence[int]) -> None:
        self._of = list(accelerators)
        self._left: dict[int, float] = {}  # replica -> work left in its step (seconds at full speed)
        self._since: dict[int, float] = {}  # accelerator -> when ``_left`` was last brought up to date
        self._due: dict[int, float] = {}  # replica -> completion time at the current share

    def _members(self, acc: int) -> list[int]:
        return [e for e in self._left if self._of[e] == acc]

    def _advance(self, acc: int, t: float) -> None:
        members = self._members(acc)
        if members:
            done = (t - self._since.get(acc, t)) / len(members)
            for e in members:
                self._left[e] -= done
        self._since[acc] = t

    def _reschedule(self, acc: int, t: float) -> list[tuple[int, float]]:
        members = self._members(acc)
        out = []
        for e in members:
            self._due[e] = due = t + max(self._left[e], 0.0) * len(members)
            out.append((e, due))
        return out

    def start(self, replica: int, t: float, work: float) -> list[tuple[int, float]]:
        """Replica ``replica`` starts a step of ``work`` seconds (alone) at ``t``."""
        acc = self._of[replica]
        self._advance(acc, t)
        self._left[replica] = work
        return self._reschedule(acc, t)

    def finish(self, replica: int, t: float) -> list[tuple[int, float]]:
        """Replica ``replica``'s step ended at ``t`` (its due time); the others of its accelerator speed up."""
        acc = self._of[replica]
        self._advance(acc, t)
        del self._left[replica]
        del self._due[replica]
        return self._reschedule(acc, t)

    def is_due(self, replica: int, t: float) -> bool:
        """Whether ``t`` is the current completion time of ``replica``'s step (else the event is stale)."""
        return self._due.get(replica) == t
