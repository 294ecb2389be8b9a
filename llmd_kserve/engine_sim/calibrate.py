"""Replays measured calibration scenarios through the engine core on a virtual clock and reports per-point errors.

``python -m llmd_kserve.engine_sim.calibrate [--profile NAME|FILE] [--data DIR]`` prints the table. The replay
reproduces the measuring client (``shared/gpu/calib.py``): random prompts, ``ignore_eos``, streaming, requests of
a batch sent at once through aiohttp's default pool of 100 connections (so at concurrency 128/256 only 100 are in
flight), TTFT measured from the send, ITL as each request's mean gap, medians over requests. A request reaches the
scheduler after the profile's front-end latency.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
from dataclasses import dataclass
from pathlib import Path

from llmd_kserve.defaults import DEFAULT_PROFILE
from llmd_kserve.engine_sim.core import EngineCore
from llmd_kserve.engine_sim.frontend import Frontend
from llmd_kserve.latency import LatencyProfile, load_profile

DATA_DIR = Path(__file__).parent / "calibration"
CLIENT_CONNECTIONS = 100  # aiohttp.TCPConnector's default limit, used by the measuring client
CALIB2_BLOCKS = 107_856 // 16  # the second replica's KV cache (calib2.json)
OUTLIERS = {
    # one unrepeated sample: 832 new tokens over a 7,360-token cached prefix measured 66.8 ms, slower than a cold
    # 1,024-token prefill (30.6 ms) and not far from 2,048 new tokens over 6,144 cached (78.9 ms); the four other
    # prefix-hit points lie on one line (26 us/token) that puts it near 40 ms. Reported, not checked.
    "prefix_hit frac=0.9",
}


@dataclass(frozen=True, slots=True)
class Point:
    """One measured number and its simulated counterpart."""

    scenario: str
    metric: str
    measured: float
    simulated: float
    checked: bool = True
    """False for numbers reported for context but not part of the 20% acceptance (see ``checked`` in the table)."""

    @property
    def error(self) -> float:
        return (self.simulated - self.measured) / self.measured


@dataclass(frozen=True, slots=True)
class _Result:
    ttft: float
    itl_mean: float | None
    e2e: float


class Replayer:
    """A virtual-clock client for one engine core: send batches of requests, get per-request timings."""

    def __init__(self, core: EngineCore, seed: int = 7) -> None:
        self.core = core
        self.now = 0.0
        self.rng = random.Random(seed)
        self._n = 0
        self.frontend = Frontend(core.profile)

    def toks(self, n: int) -> list[int]:
        return [self.rng.randrange(10, 32000) for _ in range(n)]

    def batch(self, prompts: list[list[int]], max_tokens: int, limit: int = CLIENT_CONNECTIONS) -> list[_Result]:
        """Send all prompts at once (at most ``limit`` in flight); returns timings in prompt order."""
        core, fe = self.core, self.frontend
        t0 = self.now
        arrivals: list[tuple[float, int]] = []  # (time it reaches the scheduler, index)
        ids: dict[str, int] = {}
        stamps: list[list[float]] = [[] for _ in prompts]
        nxt = 0

        def send(i: int, at: float) -> None:
            heapq.heappush(arrivals, (fe.ready_at(at, len(prompts[i])), i))

        while nxt < min(limit, len(prompts)):
            send(nxt, t0)
            nxt += 1
        done = 0
        while done < len(prompts):
            while arrivals and arrivals[0][0] <= self.now:
                _, i = heapq.heappop(arrivals)
                self._n += 1
                rid = f"r{self._n}"
                ids[rid] = i
                core.add_request(rid, prompts[i], max_tokens)
            if not core.has_work():
                self.now = arrivals[0][0]
                continue
            out = core.step(self.now)
            self.now = out.end
            for rid in out.new_tokens:
                stamps[ids[rid]].append(self.now)
            for _rid in out.finished:
                done += 1
                if nxt < len(prompts):
                    send(nxt, self.now)
                    nxt += 1
        results = []
        for st in stamps:
            # a request waiting for a pooled connection started its clock at t0 (the client's t0 is per coroutine)
            itl = (st[-1] - st[0]) / (len(st) - 1) if len(st) > 1 else None
            results.append(_Result(st[0] - t0, itl, st[-1] - t0))
        return results


def _core(profile: LatencyProfile, num_blocks: int | None = None) -> EngineCore:
    return EngineCore(profile, num_blocks=num_blocks, seed=0)


def replay(profile: LatencyProfile, data_dir: Path | None = None) -> list[Point]:
    """Every scenario of ``calib.json`` and ``calib2.json`` replayed; one Point per measured number."""
    d = data_dir or DATA_DIR / "h100-llama8b"
    calib = json.loads((d / "calib.json").read_text())
    points: list[Point] = []
    med = statistics.median

    r = Replayer(_core(profile))
    for row in calib["prefill"]:
        cold, warm = [], []
        for _ in range(3):
            p = r.toks(row["len"])
            cold.append(r.batch([p], 2)[0].ttft)
            warm.append(r.batch([p], 2)[0].ttft)
        points.append(Point(f"prefill len={row['len']}", "ttft cold", row["ttft_cold_med"], med(cold)))
        points.append(Point(f"prefill len={row['len']}", "ttft warm", row["ttft_warm_med"], med(warm)))
    base = r.toks(8192)
    r.batch([base], 2)
    for row in calib["prefix_hit"]:
        k = int(8192 * row["shared_frac"])
        ttft = r.batch([base[:k] + r.toks(8192 - k)], 2)[0].ttft
        sc = f"prefix_hit frac={row['shared_frac']}"
        points.append(Point(sc, "ttft", row["ttft"], ttft, checked=sc not in OUTLIERS))
    for row in calib["decode"]:
        c = row["concurrency"]
        res = r.batch([r.toks(512) for _ in range(c)], 128)
        sc = f"decode C={c}"
        points.append(Point(sc, "itl_med", row["itl_med"], med([x.itl_mean for x in res])))
        # a burst's TTFT is the front end's (requests reach the scheduler one by one): checked where it is modelled
        points.append(Point(sc, "ttft_med", row["ttft_med"], med([x.ttft for x in res]),
                            checked=profile.serial_frontend))
    for row in calib["mixed"]:
        c, n = row["concurrency"], row["len"]
        res = r.batch([r.toks(n) for _ in range(c)], 64)
        sc = f"mixed C={c} len={n}"
        points.append(Point(sc, "ttft_med", row["ttft_med"], med([x.ttft for x in res])))
        points.append(Point(sc, "ttft_max", row["ttft_max"], max(x.ttft for x in res), checked=False))
        points.append(Point(sc, "itl_med", row["itl_med"], med([x.itl_mean for x in res])))

    p2 = d / "calib2.json"
    if p2.is_file():
        calib2 = json.loads(p2.read_text())
        r = Replayer(_core(profile, CALIB2_BLOCKS))
        for row in calib2["decode_ctx"]:
            c, n = row["concurrency"], row["ctx"]
            res = r.batch([r.toks(n) for _ in range(c)], 96)
            points.append(Point(f"decode_ctx ctx={n} C={c}", "itl_med", row["itl_med"], med([x.itl_mean for x in res])))
        for row in calib2["prefill_batch"]:
            c, n = row["concurrency"], row["len"]
            res = r.batch([r.toks(n) for _ in range(c)], 1)
            wall = max(x.e2e for x in res)
            points.append(Point(f"prefill_batch C={c} len={n}", "tok_s", row["tok_s"], c * n / wall))
    return points


def format_table(points: list[Point]) -> str:
    """The per-point error table as plain text."""
    lines = [f"{'scenario':<28} {'metric':<10} {'measured':>10} {'simulated':>10} {'error':>8}  checked"]
    for p in points:
        unit = 1e3 if p.metric != "tok_s" else 1.0
        lines.append(
            f"{p.scenario:<28} {p.metric:<10} {p.measured * unit:>10.2f} {p.simulated * unit:>10.2f} "
            f"{p.error:>+8.1%}  {'yes' if p.checked else 'no'}"
        )
    checked = [abs(p.error) for p in points if p.checked]
    lines.append(f"checked points: {len(checked)}, max |error| {max(checked):.1%}, mean |error| "
                 f"{statistics.mean(checked):.1%} (times in ms, tok_s in tokens/s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=DEFAULT_PROFILE)
    ap.add_argument("--data", default=None, help="directory with calib.json (and calib2.json)")
    a = ap.parse_args(argv)
    print(format_table(replay(load_profile(a.profile), Path(a.data) if a.data else None)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
