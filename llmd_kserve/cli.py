"""`llmd-kserve …`: the one command-line entry point; the only module that reads flags and the environment.

Each subcommand lives in its own ``_cmd_<name>`` function below that parses nothing itself: it imports the module
that does the work lazily (so ``llmd-kserve --help`` stays fast) and calls it with plain keyword arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from llmd_kserve import __version__
from llmd_kserve.errors import ConfigError, LlmdError

log = logging.getLogger(__name__)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535 (0: any free port), got {value}")
    return port


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return n


def _positive_float(value: str) -> float:
    x = float(value)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return x


def _rates(value: str) -> list[float]:
    try:
        rates = [float(x) for x in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rates like 1,2.5,4, got {value!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"rates must be > 0, got {value!r}")
    return rates


def _check_output(path: str | None, flag: str) -> None:
    """Fail before the work starts when an output file could not be written afterwards."""
    if not path:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"is a directory, expected a file path: {path}", flag)
    if not os.path.isdir(parent):
        raise ConfigError(f"directory does not exist: {parent}", flag)
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"directory is not writable: {parent}", flag)


# --- engine ---------------------------------------------------------------------------------------------------
def _add_engine(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("engine", help="run a simulated vLLM 0.26 replica (OpenAI API, /metrics, KV events)")
    p.add_argument("--host", default="127.0.0.1",
                   help="listen address (default loopback; engines have no auth: expose them to the router only)")
    p.add_argument("--port", type=_port, default=8000, help="HTTP port (0: any free port)")
    p.add_argument("--model", default="llama-8b-shape", help="served model name")
    p.add_argument("--profile", default="h100-llama8b", help="latency profile name or YAML/JSON file")
    p.add_argument("--num-blocks", type=int, default=None, help="KV blocks (default: the profile's)")
    p.add_argument("--block-size", type=int, default=None, help="default: the profile's (16)")
    p.add_argument("--max-num-seqs", type=int, default=None, help="default: the profile's (1024 for h100-llama8b)")
    p.add_argument("--max-num-batched-tokens", type=int, default=None, help="per-step token budget")
    p.add_argument("--max-model-len", type=int, default=None, help="default: the profile's (16384)")
    p.add_argument("--kv-events-endpoint", default=None, help="ZMQ PUB bind address, e.g. tcp://*:5557")
    p.add_argument("--kv-events-topic", default=None, help="default kv@<host:port>@<model>")
    p.add_argument("--role", choices=["both", "prefill", "decode"], default="both")
    p.add_argument("--kv-link-gbps", type=float, default=None, help="P/D KV transfer bandwidth (GB/s)")
    p.add_argument("--time-scale", type=float, default=1.0, help=">1 slower than real time, <1 faster")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests answered with HTTP 500")
    p.add_argument("--crash-after", type=int, default=None, help="exit the process after N requests")
    p.add_argument("--slow-start", type=float, default=0.0, help="seconds /health answers 503 after start")
    p.set_defaults(func=_cmd_engine)


def _cmd_engine(a: argparse.Namespace) -> int:
    from llmd_kserve.engine_sim.server import serve

    return serve(**{k: v for k, v in vars(a).items() if k not in ("func", "command", "verbose")})


# --- router ---------------------------------------------------------------------------------------------------
def _add_router(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("router", help="run the KV-cache- and load-aware OpenAI router")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default loopback; 0.0.0.0 for all)")
    p.add_argument("--port", type=_port, default=8080, help="HTTP port (0: any free port)")
    p.add_argument("--config", default="default", help="shipped config name or EndpointPickerConfig YAML file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--endpoints", type=_csv, default=None, help="URL[,URL…]; URL may carry #role=prefill&kv=tcp://h:p")
    g.add_argument("--endpoints-file", default=None, help="YAML/JSON list of endpoints, watched for changes")
    g.add_argument("--discover-selector", default=None,
                   help="discover engine pods in Kubernetes by label selector (watch), e.g. app=llmd-engine")
    p.add_argument("--discover-namespace", default=None, help="namespace to watch (default: the pod's own)")
    p.add_argument("--scrape-interval", type=float, default=0.05, help="seconds between /metrics polls")
    p.add_argument("--tokenizer", default=None, help="'sim' (default), 'render' (engine /render) or tokenizer.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", default="h100-llama8b", help="latency profile for the predicted-TTFT scorer")
    p.add_argument("--max-attempts", type=int, default=3, help="upstream attempts when failing before the first byte")
    p.add_argument("--served-model", action="append", dest="served_models", default=None,
                   help="model name to accept and list (repeatable; default: the endpoints' /v1/models)")
    p.add_argument("--api-keys-file", default=None,
                   help="file of bearer tokens clients must send, one per line (or env LLMD_ROUTER_API_KEYS=k1,k2)")
    p.add_argument("--audit", choices=["off", "hash", "full"], default="off",
                   help="audit log of routed prompts on logger llmd_kserve.audit (hash: salted HMAC-SHA256 only; "
                        "LLMD_AUDIT_SALT keeps the salt across restarts)")
    p.add_argument("--max-prompt-chars", type=int, default=None, help="reject longer prompts with 413")
    _add_router_limits(p)
    p.set_defaults(func=_cmd_router)


def _add_router_limits(p: argparse.ArgumentParser) -> None:
    """Limits and timeouts (issue 9): every one a RouterSettings field of the same name."""
    g = p.add_argument_group("limits and timeouts")
    g.add_argument("--max-prompt-tokens", type=int, default=131_072,
                   help="reject prompts of more tokens (all prompts of a batch; token ids count) with 413; 0: none")
    g.add_argument("--max-batch-size", type=int, default=256, help="prompts per completions request; 0: no limit")
    g.add_argument("--max-body-bytes", type=_positive_int, default=16 << 20, help="request body limit (413 above)")
    g.add_argument("--connect-timeout", type=_positive_float, default=5.0, help="seconds to connect to an engine")
    g.add_argument("--first-byte-timeout", type=_positive_float, default=120.0,
                   help="seconds until an engine's response headers (and a stream's first event); retried elsewhere")
    g.add_argument("--idle-timeout", type=_positive_float, default=60.0,
                   help="seconds an engine may send nothing mid-response (the stream then ends with an error event)")
    g.add_argument("--eject-s", type=_positive_float, default=5.0,
                   help="seconds an engine that timed out or refused connections is left out (doubles on repeats)")
    g.add_argument("--header-timeout", type=_positive_float, default=15.0,
                   help="seconds a client may take to send its request headers (and stay idle between requests)")
    g.add_argument("--body-timeout", type=_positive_float, default=30.0, help="seconds a client may take to send a body")
    g.add_argument("--drain-timeout", type=_positive_float, default=10.0,
                   help="on SIGTERM/SIGINT, seconds in-flight requests may finish (a second signal exits at once)")


def _cmd_router(a: argparse.Namespace) -> int:
    from llmd_kserve.router.app import serve

    kw = {k: v for k, v in vars(a).items() if k not in ("func", "command", "verbose", "api_keys_file")}
    keys = _csv(os.environ.get("LLMD_ROUTER_API_KEYS", ""))
    if a.api_keys_file:
        try:
            with open(a.api_keys_file) as f:
                keys += [line.strip() for line in f if line.strip() and not line.startswith("#")]
        except OSError as exc:
            raise ConfigError(f"cannot read API keys file: {exc.strerror or exc}", a.api_keys_file) from exc
    kw["api_keys"] = tuple(keys)
    kw["served_models"] = tuple(a.served_models or ())
    kw["audit_salt"] = os.environ.get("LLMD_AUDIT_SALT") or None
    for name in ("max_prompt_tokens", "max_batch_size"):
        kw[name] = kw[name] or None  # 0: no limit
    if a.audit != "off":  # audit lines go to the root handler even when the rest logs at WARNING
        logging.getLogger("llmd_kserve.audit").setLevel(logging.INFO)
    return serve(**kw)


# --- up -------------------------------------------------------------------------------------------------------
def _add_up(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start simulated engines (or use vLLM URLs), the router and Prometheus locally")
    p.add_argument("--engines", type=int, default=2, help="simulated engines (role both)")
    p.add_argument("--prefill", type=int, default=0, help="simulated prefill engines (with --decode)")
    p.add_argument("--decode", type=int, default=0, help="simulated decode engines (with --prefill)")
    p.add_argument("--config", default="default",
                   help="router scheduler config name or file (with --prefill: default = pd-predicted-ttft)")
    p.add_argument("--vllm", type=_csv, default=None, help="use these engine URLs instead of simulated engines")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8080, help="router port")
    p.add_argument("--time-scale", type=float, default=1.0, help="engine time scale (>1 slower than real time)")
    p.add_argument("--prometheus", action=argparse.BooleanOptionalAction, default=None,
                   help="run Prometheus (default: when the binary is installed)")
    p.add_argument("--engine-arg", dest="engine_args", action="append", default=None, metavar="FLAG",
                   help="extra flag for every engine, e.g. --engine-arg=--num-blocks=2000 (repeat)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-dir", default=None, help="keep process logs here (default: a temp dir, removed on exit)")
    p.set_defaults(func=_cmd_up)


def _cmd_up(a: argparse.Namespace) -> int:
    from llmd_kserve.stack import run_up

    return run_up(**{k: v for k, v in vars(a).items() if k not in ("func", "command", "verbose")})


# --- bench ----------------------------------------------------------------------------------------------------
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark an OpenAI endpoint (or the cluster simulator): TTFT, TPOT, goodput, hits")
    p.add_argument("--target", default=None, help="base URL of the router (or an engine), e.g. http://127.0.0.1:8080")
    p.add_argument("--workload", choices=["shared-prefix", "chat", "rag", "reasoning", "trace"], default="shared-prefix")
    p.add_argument("--trace", default=None, help="Mooncake-style JSONL (timestamp ms, input_length, output_length, hash_ids)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="workload parameter, e.g. num_groups=16 (repeat)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--rate", type=float, default=None, help="open-loop arrivals per second")
    g.add_argument("--concurrency", type=_positive_int, default=None, help="closed loop with this many requests in flight")
    g.add_argument("--sweep", type=_rates, default=None, help="rates R1,R2,… (one run each)")
    p.add_argument("--arrival", choices=["poisson", "constant"], default="poisson", help="open-loop arrival process")
    p.add_argument("--num-requests", type=_positive_int, default=None, help="requests per run (scales the workload)")
    p.add_argument("--slo-ttft", type=_positive_float, default=None, help="goodput SLO on TTFT, seconds")
    p.add_argument("--slo-tpot", type=_positive_float, default=None, help="goodput SLO on TPOT, seconds")
    p.add_argument("--json", default=None, help="write the bench JSON here")
    p.add_argument("--html", default=None, help="write a self-contained plotly HTML report here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="model name (default: the target's first /v1/models id)")
    p.add_argument("--engines-metrics", type=_csv, default=None, help="engine URLs whose prefix-cache counters to diff")
    p.add_argument("--policy-label", default=None, help="name of this run in the report (e.g. the router config)")
    p.add_argument("--timeout", type=_positive_float, default=600.0, help="per-request timeout, seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--sim", action="store_true", help="run in the virtual-time cluster simulator instead of HTTP")
    p.add_argument("--engines", type=int, default=8, help="simulated engines (--sim)")
    p.add_argument("--prefill", type=int, default=0, help="simulated prefill engines (--sim, with --decode)")
    p.add_argument("--decode", type=int, default=0, help="simulated decode engines (--sim, with --prefill)")
    p.add_argument("--config", default="default",
                   help="router config for --sim (with --prefill: default = pd-predicted-ttft)")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(a: argparse.Namespace) -> int:
    from llmd_kserve.bench.runner import run_bench

    _check_output(a.json, "json")
    _check_output(a.html, "html")
    return run_bench(**{k: v for k, v in vars(a).items() if k not in ("func", "command", "verbose")})


# --- render ---------------------------------------------------------------------------------------------------
def _add_render(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="render KServe manifests (ServingRuntime, InferenceServices, graph, RBAC)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--mode", choices=["sim", "aggregated", "pd"], default=None,
                   help="one mode as a flat kustomize dir (default: base/ + overlays/<mode>/ + llminferenceservice/)")
    p.add_argument("--spec", default=None, help="DeploymentSpec YAML/JSON file (default: the built-in defaults)")
    p.set_defaults(func=_cmd_render)


def _cmd_render(a: argparse.Namespace) -> int:
    from llmd_kserve.kube.render import write_mode, write_tree
    from llmd_kserve.kube.spec import DeploymentSpec, load_spec

    spec = load_spec(a.spec) if a.spec else DeploymentSpec()
    files = write_mode(a.out, spec.with_mode(a.mode)) if a.mode else write_tree(a.out, spec)
    print(f"wrote {len(files)} files under {a.out}")
    return 0


# --- demo -----------------------------------------------------------------------------------------------------
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="routing policies side by side: 8 simulated engines + a small live stack (~3 min)")
    p.add_argument("--json", default=None, help="write the runs in the bench JSON schema (runs[].policy, .scale)")
    p.add_argument("--html", default="llmd-demo.html", help="HTML report path ('' for none)")
    p.add_argument("--quick", action="store_true", help="a reduced demo (smaller workloads, 2 live engines)")
    p.add_argument("--no-live", dest="live", action="store_false", help="skip the live HTTP runs")
    p.add_argument("--no-sim", dest="sim", action="store_false", help="skip the cluster-simulator runs")
    p.add_argument("--policies", type=_csv, default=None, help="router configs (default: the five shipped ones)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(a: argparse.Namespace) -> int:
    from llmd_kserve.demo import POLICIES, run_demo

    _check_output(a.json, "json")
    _check_output(a.html, "html")
    report = run_demo(quick=a.quick, json=a.json, html=a.html or None, live=a.live, sim=a.sim,
                      policies=a.policies or POLICIES, seed=a.seed)
    return 0 if all(c["claim_met"] for c in report["workload"]["claims"]) else 1


# --- entry point ----------------------------------------------------------------------------------------------
_SUBCOMMANDS = [_add_engine, _add_router, _add_bench, _add_up, _add_render, _add_demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmd-kserve", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"llmd-kserve {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = os.environ.get("LLMD_LOG_LEVEL") or ("DEBUG" if args.verbose > 1 else "INFO" if args.verbose else "WARNING")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (LlmdError, OSError) as exc:  # OSError: a file or directory we could not read or write
        log.debug("%s failed", args.command, exc_info=True)
        message = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"llmd-kserve {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
