"""Fit a latency profile's coefficients to the calibration replay (coordinate descent on relative errors).

    python benchmarks/engine_fit_profile.py [--profile h100-llama8b] [--data DIR] [--rounds 8]

Starts from ``--profile``'s coefficients (a zero stays zero: give a starting guess) and fits them to the calibration
set in ``--data`` (``calib.json`` as ``engine_sim.calibrate`` replays it; default the H100 set). Prints the fitted
coefficients (paste them into the profile YAML) and the per-point error table. Dev-time tool: the runtime never
fits anything. The CPU set: ``--profile cpu-tiny-llama --data llmd_kserve/engine_sim/calibration/cpu-tiny-llama``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llmd_kserve.engine_sim.calibrate import format_table, replay
from llmd_kserve.latency import load_profile

PARAMS = ["step_overhead_s", "weights_floor_s", "per_token_s", "attn_s", "decode_seq_s", "decode_ctx_s",
          "request_overhead_s", "request_overhead_per_token_s"]


def loss(profile, data: Path | None = None) -> float:
    errs = [p.error for p in replay(profile, data) if p.checked]
    return sum(e * e for e in errs) + 20 * sum(max(0.0, abs(e) - 0.15) ** 2 for e in errs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="h100-llama8b")
    ap.add_argument("--data", type=Path, default=None, help="directory with calib.json (default: the H100 set)")
    ap.add_argument("--rounds", type=int, default=8)
    a = ap.parse_args()
    prof = load_profile(a.profile)
    best = loss(prof, a.data)
    step = 0.2
    for r in range(a.rounds):
        improved = False
        for name in PARAMS:
            for f in (1 + step, 1 / (1 + step)):
                cand = prof.model_copy(update={name: getattr(prof, name) * f})
                v = loss(cand, a.data)
                if v < best:
                    prof, best, improved = cand, v, True
        print(f"round {r}: loss {best:.4f} step {step:.3f}", flush=True)
        if not improved:
            step /= 2
            if step < 0.01:
                break
    for name in PARAMS:
        print(f"{name}: {getattr(prof, name):.4g}")
    print(format_table(replay(prof, a.data)))


if __name__ == "__main__":
    main()
