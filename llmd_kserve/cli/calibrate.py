"""``llmd-kserve calibrate``: measure a deployment's peak prefill throughput (llm-d's recipe), print it as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from llmd_kserve.cli.args import positive_float, positive_int


def add_calibrate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "calibrate", help="measure peak prefill throughput for prefix-cache-affinity-filter (llm-d's recipe)",
        description="Time one-token completions of fresh random prompts of --chunk-size tokens and print "
                    "peakPrefillThroughput = chunk / median(TTFT) as JSON (progress on stderr). Set the number on "
                    "prefix-cache-affinity-filter: parameters: {peakPrefillThroughput: N}.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", help="base URL of the router or of one engine, e.g. http://127.0.0.1:8080")
    where.add_argument("--sim", metavar="PROFILE", help="measure a simulated engine of this latency profile "
                       "(a built-in name such as h100-llama8b, or a profile file)")
    p.add_argument("--model", default=None, help="model to request (default: the target's first /v1/models id)")
    p.add_argument("--chunk-size", type=positive_int, default=None,
                   help="prompt tokens per request: the engines' --max-num-batched-tokens (default 8192; "
                        "--sim: the profile's)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up requests (default 5)")
    p.add_argument("--measurements", type=positive_int, default=20, help="timed requests (default 20)")
    p.add_argument("--t-max", type=positive_float, default=18.0,
                   help="TTFT tolerance in seconds for the informational tau = peak * t-max (default 18)")
    p.add_argument("--no-fit", action="store_true",
                   help="skip the smaller prompts that fit this router's prefill-time model")
    p.add_argument("--seed", type=int, default=None, help="seed of the random prompts")
    p.add_argument("--timeout", type=positive_float, default=120.0, help="per-request timeout, seconds")
    p.add_argument("--api-key", default=None, help="bearer token, when the router wants one")
    p.add_argument("--sim-time-scale", type=positive_float, default=1.0,
                   help="--sim: run the simulated engine this many times slower than real time (less noise from "
                        "this machine; reported times are the simulated GPU's)")
    p.set_defaults(func=_cmd_calibrate)


def _cmd_calibrate(a: argparse.Namespace) -> int:
    from llmd_kserve.bench.peak_prefill import CalibrationOptions, calibrate, calibrate_sim
    from llmd_kserve.errors import ConfigError

    if a.warmup < 0:
        raise ConfigError(f"must be >= 0, got {a.warmup}", "warmup")

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    common = {"model": a.model, "warmup": a.warmup, "measurements": a.measurements, "t_max_s": a.t_max,
              "fit": not a.no_fit, "seed": a.seed, "timeout_s": a.timeout, "api_key": a.api_key}
    if a.chunk_size is not None:
        common["chunk"] = a.chunk_size
    if a.sim:
        result = calibrate_sim(a.sim, progress, time_scale=a.sim_time_scale, **common)
    else:
        result = calibrate(CalibrationOptions(target=a.target, **common), progress)
    print(json.dumps(result.document(), indent=2))
    return 0
