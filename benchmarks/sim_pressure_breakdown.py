"""Per-replica breakdown of the fidelity ``pressure`` run in virtual time, optionally on a slower or faster GPU.

For each routing and replica: requests, prefix lookups per request (``vllm:prefix_cache_queries_total`` over the
prompt tokens: above 1 when a waiting head that does not fit is looked up again at every step), the engine-counter hit
rate, the hit rate of the tokens actually served from cache (``cached_tokens`` at each request's first scheduling),
steps and busy seconds. ``--speed-factor F`` multiplies every step-time term of the profile by ``F`` (1.1: a GPU 10%
slower), to see how much of the counter hit rate is timing. Example::

    python benchmarks/sim_pressure_breakdown.py --blocks 2195,6741 --shared --rate 8 --num-requests 280 \\
        --speed-factor 1.0 1.1 1.2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fidelity  # noqa: E402
import fidelity_run  # noqa: E402

from llmd_kserve.engine_sim.core import EngineCore  # noqa: E402
from llmd_kserve.latency import load_profile  # noqa: E402

STEP_TERMS = ("step_overhead_s", "weights_floor_s", "per_token_s", "attn_s", "decode_seq_s", "decode_ctx_s")


def scaled_profile(name: str, factor: float, folder: Path) -> str:
    """A profile file like ``name`` with every step-time term times ``factor``; returns its path."""
    data = load_profile(name).model_dump()
    for k in STEP_TERMS:
        data[k] *= factor
    path = folder / f"scaled-{factor}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def breakdown(blocks: list[int], routing: str, profile: str, shared: bool, rate: float, n: int,
              seed: int) -> list[str]:
    """One run; a line for the whole run, then one per replica."""
    cores: list[EngineCore] = []

    class Recorded(EngineCore):
        """An engine core that registers itself, so its counters can be read after the run."""

        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            cores.append(self)

    setattr(fidelity_run, "EngineCore", Recorded)  # noqa: B010 - run_virtual builds its cores from this name
    try:
        run = fidelity_run.run_virtual(blocks, routing, fidelity.pressure_requests(seed, rate, n), profile,
                                       [0] * len(blocks) if shared else None)
    finally:
        setattr(fidelity_run, "EngineCore", EngineCore)  # noqa: B010
    rs, c = run["results"], run["counters"]
    ttft = sum(r["ttft"] for r in rs) / len(rs)
    served = sum(r["cached_tokens"] for r in rs) / sum(r["prompt_tokens"] for r in rs)
    lines = [f"{routing:12s} TTFT mean {ttft * 1000:.0f} ms, hit rate engine {c['hits'] / c['queries']:.3f}, "
             f"served {served:.3f}, queue mean {run['queue_mean']:.2f}"]
    for i, core in enumerate(cores):
        st, mine = core.stats, [r for r in rs if r["endpoint"] == f"sim-{i}"]
        prompt = sum(r["prompt_tokens"] for r in mine)
        lines.append(f"  replica {i} ({core.num_blocks} blocks): {len(mine)} requests, "
                     f"lookups/request {st.prefix_queries / prompt:.2f}, hit rate engine "
                     f"{st.prefix_hits / st.prefix_queries:.3f}, served {sum(r['cached_tokens'] for r in mine) / prompt:.3f}, "
                     f"{st.num_steps} steps, busy {st.busy_time:.1f} s")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", default="2195,6741", help="KV blocks per replica")
    p.add_argument("--shared", action="store_true", help="the replicas time-share one accelerator")
    p.add_argument("--rate", type=float, default=8.0)
    p.add_argument("--num-requests", type=int, default=280)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", default="h100-llama8b")
    p.add_argument("--speed-factor", type=float, nargs="+", default=[1.0])
    a = p.parse_args(argv)
    try:
        blocks = [int(b) for b in a.blocks.split(",")]
    except ValueError:
        p.error("--blocks takes comma-separated integers")
    with tempfile.TemporaryDirectory() as tmp:
        for f in a.speed_factor:
            prof = a.profile if f == 1.0 else scaled_profile(a.profile, f, Path(tmp))
            print(f"speed factor {f} ({'one shared GPU' if a.shared else 'one GPU each'}), {a.num_requests} "
                  f"requests at {a.rate} req/s")
            for routing in fidelity_run.ROUTINGS:
                print("\n".join(breakdown(blocks, routing, prof, a.shared, a.rate, a.num_requests, a.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
