"""Fit a latency profile's coefficients to the calibration replay (coordinate descent on relative errors).

    python benchmarks/engine_fit_profile.py [--profile h100-llama8b] [--rounds 8]

Prints the fitted coefficients (paste them into the profile YAML) and the per-point error table. Dev-time tool:
the runtime never fits anything.
"""

from __future__ import annotations

import argparse

from llmd_kserve.engine_sim.calibrate import format_table, replay
from llmd_kserve.latency import load_profile

PARAMS = ["step_overhead_s", "weights_floor_s", "per_token_s", "attn_s", "decode_seq_s", "decode_ctx_s",
          "request_overhead_s", "request_overhead_per_token_s"]


def loss(profile) -> float:
    errs = [p.error for p in replay(profile) if p.checked]
    return sum(e * e for e in errs) + 20 * sum(max(0.0, abs(e) - 0.15) ** 2 for e in errs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="h100-llama8b")
    ap.add_argument("--rounds", type=int, default=8)
    a = ap.parse_args()
    prof = load_profile(a.profile)
    best = loss(prof)
    step = 0.2
    for r in range(a.rounds):
        improved = False
        for name in PARAMS:
            for f in (1 + step, 1 / (1 + step)):
                cand = prof.model_copy(update={name: getattr(prof, name) * f})
                v = loss(cand)
                if v < best:
                    prof, best, improved = cand, v, True
        print(f"round {r}: loss {best:.4f} step {step:.3f}", flush=True)
        if not improved:
            step /= 2
            if step < 0.01:
                break
    for name in PARAMS:
        print(f"{name}: {getattr(prof, name):.4g}")
    print(format_table(replay(prof)))


if __name__ == "__main__":
    main()
