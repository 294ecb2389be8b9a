"""`llmd-kserve …`: the one command-line entry point; the only module that reads flags and the environment.

Each subcommand lives in its own ``_cmd_<name>`` function below that parses nothing itself: it imports the module
that does the work lazily (so ``llmd-kserve --help`` stays fast) and calls it with plain keyword arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from llmd_kserve import __version__
from llmd_kserve.defaults import (
    DEFAULT_CONFIG,
    DEFAULT_MODEL,
    DEFAULT_PROFILE,
    ENGINE_PORT,
    PD_SHIPPED_CONFIGS,
    ROUTER_PORT,
    SCRAPE_INTERVAL_S,
    SHIPPED_CONFIGS,
    WORKLOAD_KINDS,
)
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


def _shipped() -> str:
    return ", ".join(SHIPPED_CONFIGS + PD_SHIPPED_CONFIGS)


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
    p.add_argument("--port", type=_port, default=ENGINE_PORT, help="HTTP port (0: any free port)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="served model name")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="latency profile name or YAML/JSON file")
    p.add_argument("--num-blocks", type=int, default=None, help="KV blocks (default: the profile's)")
    p.add_argument("--block-size", type=int, default=None, help="default: the profile's (16)")
    p.add_argument("--max-num-seqs", type=int, default=None, help="default: the profile's (1024 for h100-llama8b)")
    p.add_argument("--max-num-batched-tokens", type=int, default=None, help="per-step token budget")
    p.add_argument("--max-model-len", type=int, default=None, help="default: the profile's (16384)")
    p.add_argument("--kv-events-endpoint", default=None, help="ZMQ PUB bind address, e.g. tcp://*:5557")
    p.add_argument("--kv-events-topic", default=None, help="default kv@<host:port>@<model>")
    p.add_argument("--kv-events-replay-endpoint", default=None,
                   help="ZMQ ROUTER bind address resending missed KV events (vLLM's replay_endpoint), e.g. tcp://*:5558")
    p.add_argument("--role", choices=["both", "prefill", "decode"], default="both")
    p.add_argument("--kv-link-gbps", type=float, default=None, help="P/D KV transfer bandwidth (GB/s)")
    p.add_argument("--time-scale", type=float, default=1.0, help=">1 slower than real time, <1 faster")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests answered with HTTP 500")
    p.add_argument("--crash-after", type=int, default=None, help="exit the process after N requests")
    p.add_argument("--slow-start", type=float, default=0.0, help="seconds /health answers 503 after start")
    p.set_defaults(func=_cmd_engine)


def _cmd_engine(a: argparse.Namespace) -> int:
    from llmd_kserve.engine_sim.options import EngineOptions
    from llmd_kserve.engine_sim.server import serve

    return serve(EngineOptions(
        host=a.host, port=a.port, model=a.model, profile=a.profile, num_blocks=a.num_blocks, block_size=a.block_size,
        max_num_seqs=a.max_num_seqs, max_num_batched_tokens=a.max_num_batched_tokens, max_model_len=a.max_model_len,
        kv_events_endpoint=a.kv_events_endpoint, kv_events_topic=a.kv_events_topic, role=a.role,
        kv_events_replay_endpoint=a.kv_events_replay_endpoint,
        kv_link_gbps=a.kv_link_gbps, time_scale=a.time_scale, seed=a.seed, error_rate=a.error_rate,
        crash_after=a.crash_after, crash_exits_process=True, slow_start=a.slow_start))


# --- router ---------------------------------------------------------------------------------------------------
def _add_router(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("router", help="run the KV-cache- and load-aware OpenAI router")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default loopback; 0.0.0.0 for all)")
    p.add_argument("--port", type=_port, default=ROUTER_PORT, help="HTTP port (0: any free port)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"shipped config name ({_shipped()}) or EndpointPickerConfig YAML file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--endpoints", type=_csv, default=None, help="URL[,URL…]; URL may carry #role=prefill&kv=tcp://h:p")
    g.add_argument("--endpoints-file", default=None, help="YAML/JSON list of endpoints, watched for changes")
    g.add_argument("--discover-selector", default=None,
                   help="discover engine pods in Kubernetes by label selector (watch), e.g. app=llmd-engine")
    p.add_argument("--discover-namespace", default=None, help="namespace to watch (default: the pod's own)")
    p.add_argument("--scrape-interval", type=float, default=SCRAPE_INTERVAL_S, help="seconds between /metrics polls")
    p.add_argument("--scrape-idle-interval", type=float, default=5.0,
                   help="seconds between /metrics polls of an endpoint without requests (0: none while idle; "
                        "<= --scrape-interval: fixed-rate polling)")
    p.add_argument("--tokenizer", default=None, help="'sim' (default), 'render' (engine /render) or tokenizer.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="latency profile for the predicted-TTFT scorer")
    p.add_argument("--max-attempts", type=int, default=3, help="upstream attempts when failing before the first byte")
    p.add_argument("--served-model", action="append", dest="served_models", default=None,
                   help="model name to accept and list (repeatable; default: the endpoints' /v1/models)")
    p.add_argument("--api-keys-file", default=None,
                   help="file of bearer tokens clients must send, one per line (or env LLMD_ROUTER_API_KEYS=k1,k2)")
    p.add_argument("--audit", choices=["off", "hash", "full"], default="off",
                   help="audit log of routed prompts on logger llmd_kserve.audit (hash: salted HMAC-SHA256 only; "
                        "LLMD_AUDIT_SALT keeps the salt across restarts)")
    p.add_argument("--max-prompt-chars", type=int, default=None, help="reject longer prompts with 413")
    p.add_argument("--admin", action="store_true",
                   help="serve GET/POST /admin/config (config hot reload): API key required when keys are "
                        "configured, else loopback clients only")
    _add_router_limits(p)
    _add_router_governance(p)
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


def _add_router_governance(p: argparse.ArgumentParser) -> None:
    """Virtual keys, guardrails, flow control and the audit trail (issue 14): RouterSettings fields of the same name."""
    g = p.add_argument_group("governance")
    g.add_argument("--keys-file", default=None, help="YAML virtual keys (llmd-kserve keys add), reloaded on change")
    g.add_argument("--guardrails-file", default=None, help="YAML guardrail hooks (blocklist, pii-redaction)")
    g.add_argument("--audit-file", default=None,
                   help="hash-chained JSONL audit trail (--audit full: redacted text instead of salted hashes)")
    g.add_argument("--audit-fsync", choices=["every", "interval"], default="every",
                   help="fsync every record before the request goes on (group commit), or every --audit-fsync-interval s")
    g.add_argument("--audit-fsync-interval", type=_positive_float, default=1.0)
    g.add_argument("--audit-max-bytes", type=_positive_int, default=None, help="rotate the audit file at this size")
    g.add_argument("--audit-max-age", type=_positive_float, default=None, dest="audit_max_age_s",
                   help="rotate the audit file after this many seconds")
    g.add_argument("--flow-per-endpoint", type=_positive_int, default=None,
                   help="flow control: requests in flight per endpoint before the rest queue (priority, tenant)")
    g.add_argument("--flow-band-capacity", type=_positive_int, default=1024, help="queued requests per priority band")
    g.add_argument("--flow-ttl", type=_positive_float, default=30.0, dest="flow_ttl_s",
                   help="seconds a request may wait in the queue (then 503, x-llmd-drop-reason: ttl_expired)")


_GOVERNANCE_FLAGS = ("keys_file", "guardrails_file", "audit_file", "audit_fsync", "audit_fsync_interval",
                     "audit_max_bytes", "audit_max_age_s", "flow_per_endpoint", "flow_band_capacity", "flow_ttl_s")


def _cmd_router(a: argparse.Namespace) -> int:
    from llmd_kserve.router.app import serve
    from llmd_kserve.router.state import RouterSettings

    keys = _csv(os.environ.get("LLMD_ROUTER_API_KEYS", ""))
    if a.api_keys_file:
        try:
            with open(a.api_keys_file) as f:
                keys += [line.strip() for line in f if line.strip() and not line.startswith("#")]
        except OSError as exc:
            raise ConfigError(f"cannot read API keys file: {exc.strerror or exc}", a.api_keys_file) from exc
    settings = RouterSettings(
        config=a.config, scrape_interval=a.scrape_interval, tokenizer=a.tokenizer, seed=a.seed, profile=a.profile,
        scrape_idle_interval=a.scrape_idle_interval or None, max_attempts=a.max_attempts, api_keys=tuple(keys), audit=a.audit, max_prompt_chars=a.max_prompt_chars,
        served_models=tuple(a.served_models or ()), audit_salt=os.environ.get("LLMD_AUDIT_SALT") or None,
        max_prompt_tokens=a.max_prompt_tokens or None, max_batch_size=a.max_batch_size or None,  # 0: no limit
        max_body_bytes=a.max_body_bytes, connect_timeout=a.connect_timeout, first_byte_timeout=a.first_byte_timeout,
        idle_timeout=a.idle_timeout, eject_s=a.eject_s, header_timeout=a.header_timeout, body_timeout=a.body_timeout,
        drain_timeout=a.drain_timeout, admin=a.admin, **{n: getattr(a, n) for n in _GOVERNANCE_FLAGS})
    if a.audit != "off":  # audit lines go to the root handler even when the rest logs at WARNING
        logging.getLogger("llmd_kserve.audit").setLevel(logging.INFO)
    return serve(settings, host=a.host, port=a.port, endpoints=a.endpoints, endpoints_file=a.endpoints_file,
                 discover_selector=a.discover_selector, discover_namespace=a.discover_namespace)


# --- epp (Gateway API Endpoint Picker) ----------------------------------------------------------------------
def _add_epp(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("epp", help="serve the scheduler as a Gateway API Endpoint Picker (Envoy ext_proc gRPC)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default loopback; the manifests pass 0.0.0.0)")
    p.add_argument("--grpc-port", type=_port, default=9002, help="ext_proc + gRPC health port (0: any free port)")
    p.add_argument("--metrics-port", type=_port, default=9090, help="Prometheus /metrics, /health, /debug/decisions")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"shipped config name ({_shipped()}) or EndpointPickerConfig YAML file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--endpoints", type=_csv, default=None, help="URL[,URL…] of the pool (ip:port as Envoy dials them)")
    g.add_argument("--endpoints-file", default=None, help="YAML/JSON list of endpoints, watched for changes")
    g.add_argument("--discover-selector", default=None, help="InferencePool selector: follow ready pods by label")
    p.add_argument("--discover-namespace", default=None, help="namespace to watch (default: the pod's own)")
    p.add_argument("--target-ports", type=_csv, default=["8000"], help="pool targetPorts (data-parallel ranks)")
    p.add_argument("--kv-events-port", type=_port, default=5557, help="KV-event port of rank 0 on each pod")
    p.add_argument("--response-mode", choices=["full", "headers"], default="full",
                   help="full: response bodies stream through the EPP (usage, cache accounting); headers: headers "
                        "and trailers only (cheaper; load released at end of stream). Must match Envoy's config")
    p.add_argument("--saturation-queue", type=int, default=5, help="waiting requests that saturate an endpoint")
    p.add_argument("--saturation-kv", type=float, default=0.8, help="KV-cache usage that saturates an endpoint")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="seconds open streams get after SIGTERM")
    p.add_argument("--scrape-interval", type=_positive_float, default=SCRAPE_INTERVAL_S, help="seconds between /metrics polls")
    p.add_argument("--tokenizer", default=None, help="'sim' (default), 'render' or tokenizer.json")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="latency profile for the predicted-TTFT scorer")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_epp)


def _cmd_epp(a: argparse.Namespace) -> int:
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # gRPC's C core logs to stderr; our errors say it in one line
    from llmd_kserve.epp.picker import Saturation
    from llmd_kserve.epp.run import serve
    from llmd_kserve.epp.server import EppSettings
    from llmd_kserve.router.state import RouterSettings

    try:
        ports = tuple(int(p) for p in a.target_ports)
    except ValueError:
        raise ConfigError(f"must be ports like 8000,8001, got {','.join(a.target_ports)}", "target-ports") from None
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise ConfigError("must be 1..65535", "target-ports")
    epp = EppSettings(response_mode=a.response_mode, saturation=Saturation(a.saturation_queue, a.saturation_kv),
                      drain_timeout=a.drain_timeout)
    router = RouterSettings(config=a.config, scrape_interval=a.scrape_interval, tokenizer=a.tokenizer,
                            profile=a.profile, seed=a.seed)
    return serve(host=a.host, grpc_port=a.grpc_port, metrics_port=a.metrics_port, endpoints=a.endpoints,
                 endpoints_file=a.endpoints_file, discover_selector=a.discover_selector,
                 discover_namespace=a.discover_namespace, target_ports=ports, kv_events_port=a.kv_events_port,
                 epp=epp, router=router)


def _add_pd_sidecar(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pd-sidecar", help="next to a decode engine: run the P/D handshake the EPP asks for")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default loopback; the manifests pass 0.0.0.0)")
    p.add_argument("--port", type=_port, default=8000, help="port the pool lists for this decode endpoint")
    p.add_argument("--decode", required=True, help="the local decode engine's URL, e.g. http://127.0.0.1:8200")
    p.add_argument("--prefill-endpoints", type=_csv, required=True,
                   help="the pool's prefill endpoints (URL or host:port); any other x-prefiller-host-port is refused")
    p.add_argument("--prefill-timeout", type=_positive_float, default=30.0, help="seconds for the prefill hop")
    p.set_defaults(func=_cmd_pd_sidecar)


def _cmd_pd_sidecar(a: argparse.Namespace) -> int:
    from llmd_kserve.epp.sidecar import serve

    return serve(decode=a.decode, prefill_endpoints=a.prefill_endpoints, host=a.host, port=a.port,
                 prefill_timeout_s=a.prefill_timeout)


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
    p.add_argument("--port", type=_port, default=ROUTER_PORT, help="router port")
    p.add_argument("--time-scale", type=float, default=1.0, help="engine time scale (>1 slower than real time)")
    p.add_argument("--prometheus", action=argparse.BooleanOptionalAction, default=None,
                   help="run Prometheus (default: when the binary is installed)")
    p.add_argument("--engine-arg", dest="engine_args", action="append", default=None, metavar="FLAG",
                   help="extra flag for every engine, e.g. --engine-arg=--num-blocks=2000 (repeat)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-dir", default=None, help="keep process logs here (default: a temp dir, removed on exit)")
    p.add_argument("--state-file", default=None, help="write URLs and pids as JSON here once healthy (removed on exit)")
    p.add_argument("--gateway", choices=["none", "envoy"], default="none",
                   help="envoy: a real Envoy in front, our scheduler as its Endpoint Picker (ext_proc)")
    p.add_argument("--response-mode", choices=["full", "headers"], default="full",
                   help="with --gateway envoy: stream response bodies through the EPP, or headers/trailers only")
    p.add_argument("--fail-open", action="store_true",
                   help="with --gateway envoy: failure_mode_allow; round-robin over the engines when the EPP is down")
    p.set_defaults(func=_cmd_up)


def _cmd_up(a: argparse.Namespace) -> int:
    from llmd_kserve.stack import StackConfig, run_up

    return run_up(StackConfig(
        engines=a.engines, prefill=a.prefill, decode=a.decode, config=a.config, vllm_urls=tuple(a.vllm or ()),
        host=a.host, port=a.port, time_scale=a.time_scale, prometheus=a.prometheus,
        engine_args=tuple(a.engine_args or ()), seed=a.seed, log_dir=a.log_dir, gateway=a.gateway,
        response_mode=a.response_mode, fail_open=a.fail_open), state_file=a.state_file)


# --- bench ----------------------------------------------------------------------------------------------------
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark an OpenAI endpoint (or the cluster simulator): TTFT, TPOT, goodput, hits")
    p.add_argument("--target", default=None, help="base URL of the router (or an engine), e.g. http://127.0.0.1:8080")
    p.add_argument("--workload", choices=WORKLOAD_KINDS, default="shared-prefix")
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
    from llmd_kserve.bench.runner import BenchOptions, run_bench

    _check_output(a.json, "json")
    _check_output(a.html, "html")
    write_html = None
    if a.html:
        from llmd_kserve.bench.report import require_plotly

        require_plotly("html")
        from llmd_kserve.viz.report_page import write_html
    simulator = None
    if a.sim:
        from llmd_kserve.cluster_sim import run_bench as simulator
    options = BenchOptions(
        target=a.target, workload=a.workload, trace=a.trace, rate=a.rate, concurrency=a.concurrency,
        sweep=tuple(a.sweep or ()), arrival=a.arrival, num_requests=a.num_requests, slo_ttft=a.slo_ttft,
        slo_tpot=a.slo_tpot, json_path=a.json, html_path=a.html, seed=a.seed,
        engines_metrics=tuple(a.engines_metrics or ()), policy_label=a.policy_label, model=a.model,
        overrides=tuple(a.set or ()), sim=a.sim, engines=a.engines, config=a.config, prefill=a.prefill,
        decode=a.decode, progress=not a.no_progress, timeout=a.timeout)
    return run_bench(options, simulator, write_html)


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
    from llmd_kserve.bench.report import require_plotly
    from llmd_kserve.demo import POLICIES, run_demo

    _check_output(a.json, "json")
    _check_output(a.html, "html")
    if a.html:
        require_plotly("html")
    report = run_demo(quick=a.quick, json=a.json, html=a.html or None, live=a.live, sim=a.sim,
                      policies=a.policies or POLICIES, seed=a.seed)
    return 0 if all(c["claim_met"] for c in report["workload"]["claims"]) else 1


# --- pipeline -------------------------------------------------------------------------------------------------
def _add_pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="Kubeflow pipelines: list, compile, run locally (kfp.local) or submit")
    ps = p.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    ps.add_parser("list", help="the pipelines and their parameters with defaults")
    c = ps.add_parser("compile", help="compile to KFP IR YAML (all pipelines when NAME is omitted)")
    c.add_argument("name", nargs="?", default=None)
    c.add_argument("--out", required=True, help="output directory (one <name>.yaml per pipeline)")
    r = ps.add_parser("run", help="run locally with kfp.local (--local) or submit to Kubeflow Pipelines (--host)")
    r.add_argument("name")
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", action="store_true", help="kfp.local SubprocessRunner with this interpreter")
    where.add_argument("--host", default=None, help="Kubeflow Pipelines API URL, e.g. http://ml-pipeline-ui:80")
    r.add_argument("--param", action="append", metavar="KEY=VALUE", help="pipeline parameter (repeat); JSON for "
                   "dict/list parameters, e.g. --param 'sweep=[2,4]'")
    r.add_argument("--pipeline-root", default="kfp-runs", help="--local: where runs write their artifacts")
    r.add_argument("--experiment", default=None, help="--host: experiment name")
    p.set_defaults(func=_cmd_pipeline)


def _cmd_pipeline(a: argparse.Namespace) -> int:
    from llmd_kserve import pipeline_runner as pr

    if a.pipeline_command == "list":
        for name in pr.load_pipelines():
            params = ", ".join(f"{p.name}: {p.type} = {json.dumps(p.default)}" for p in pr.parameters(name))
            print(f"{name}({params})")
        return 0
    if a.pipeline_command == "compile":
        names = [a.name] if a.name else list(pr.load_pipelines())
        for path in pr.compile_pipelines(names, a.out):
            print(f"wrote {path}")
        return 0
    params = pr.parse_params(a.name, a.param)  # validated before anything runs
    if a.host:
        for handler in logging.getLogger().handlers:  # kfp's API client resets urllib3's level; its retry warnings
            handler.setLevel(max(handler.level, logging.ERROR))  # would bury the one-line failure below
        print(f"submitted {a.name}: run {pr.submit(a.name, params, a.host, a.experiment)}")
        return 0
    run = pr.run_local(a.name, params, a.pipeline_root)
    for task, metrics in run.metrics().items():
        print(f"{task}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    failed = pr.failed_tasks(run, a.name)
    print(f"artifacts: {run.run_dir}" + (f"; failed or skipped: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


# --- dashboard ------------------------------------------------------------------------------------------------
def _add_dashboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="serve the live dashboard (hit rate, latency, load, last decision) as a web page")
    p.add_argument("--router", required=True, help="router base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--prometheus", default=None, help="read live numbers from this Prometheus (default: the router)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve the page on (default: this host only)")
    p.add_argument("--port", type=_port, default=8050, help="page port (0: any free port)")
    p.add_argument("--interval", type=_positive_float, default=2.0, help="seconds between refreshes")
    p.add_argument("--api-key-env", default="LLMD_API_KEY", metavar="VAR",
                   help="environment variable holding the router's API key, when it has keys (default LLMD_API_KEY)")
    p.set_defaults(func=_cmd_dashboard)


def _cmd_dashboard(a: argparse.Namespace) -> int:
    from llmd_kserve.viz.dashboard import serve

    return serve(a.router, a.prometheus, a.host, a.port, a.interval, os.environ.get(a.api_key_env) or None)


# --- entry point ----------------------------------------------------------------------------------------------
# --- keys, audit (governance) -----------------------------------------------------------------------------
def _add_keys(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="virtual API keys: add (prints the key once), list, revoke")
    ks = p.add_subparsers(dest="keys_command", required=True)
    add = ks.add_parser("add", help="create a key; its plaintext is printed once and only its salted hash is kept")
    add.add_argument("--tenant", default="default")
    add.add_argument("--team", default=None)
    add.add_argument("--name", default=None)
    add.add_argument("--model", action="append", dest="models", default=None, help="allowed model (repeatable; default all)")
    add.add_argument("--priority", type=int, choices=range(10), default=0, metavar="0..9",
                     help="flow-control band (higher first)")
    add.add_argument("--rpm", type=_positive_int, default=None, help="requests per minute")
    add.add_argument("--tpm", type=_positive_int, default=None, help="tokens per minute (prompt + completion)")
    add.add_argument("--token-budget", type=_positive_int, default=None, help="total tokens")
    add.add_argument("--max-concurrency", type=_positive_int, default=None, help="requests in flight at once")
    ks.add_parser("list", help="the keys (never their secrets) as JSON lines")
    rv = ks.add_parser("revoke", help="revoke a key by id (routers reload the file within a second)")
    rv.add_argument("key_id")
    for q in (add, *ks.choices.values()):
        if not any(x.dest == "file" for x in q._actions):
            q.add_argument("--file", required=True, help="the keys YAML file (router --keys-file)")
    p.set_defaults(func=_cmd_keys)


def _cmd_keys(a: argparse.Namespace) -> int:
    from llmd_kserve.governance.keys import add_key, load_keys, revoke_key

    if a.keys_command == "add":
        _check_output(a.file, "--file")
        plaintext, rec = add_key(a.file, tenant=a.tenant, team=a.team, name=a.name, models=tuple(a.models or ()),
                                 priority=a.priority, rpm=a.rpm, tpm=a.tpm, token_budget=a.token_budget,
                                 max_concurrency=a.max_concurrency)
        print(json.dumps({"id": rec.id, "tenant": rec.tenant}), file=sys.stderr)
        print(plaintext)  # the only time it exists outside the client
    elif a.keys_command == "list":
        for rec in load_keys(a.file).values():
            print(json.dumps(rec.public()))
    else:
        rec = revoke_key(a.file, a.key_id)
        print(json.dumps({"id": rec.id, "revoked": True}))
    return 0


def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="audit trail tools: verify the hash chain of JSONL audit files")
    aus = p.add_subparsers(dest="audit_command", required=True)
    v = aus.add_parser("verify", help="check FILE… (oldest first; a rotated set: file.1 file.2 … file) for edited, "
                                      "dropped or reordered records; exit 1 when broken")
    v.add_argument("files", nargs="+", metavar="FILE")
    v.add_argument("--expect-head", default=None, help="the last record's hash as anchored elsewhere (metrics, logs)")
    p.set_defaults(func=_cmd_audit)


def _cmd_audit(a: argparse.Namespace) -> int:
    from llmd_kserve.governance.audit import verify

    rep = verify(a.files)
    if a.expect_head and rep.head != a.expect_head:
        rep.errors.append(f"head {rep.head} is not the expected {a.expect_head} (records dropped at the end)")
    print(json.dumps({"ok": rep.ok, "records": rep.records, "first_seq": rep.first_seq, "last_seq": rep.last_seq,
                      "head": rep.head, "errors": rep.errors, "notes": rep.notes}, indent=1))
    return 0 if rep.ok else 1


_SUBCOMMANDS = [_add_engine, _add_router, _add_epp, _add_pd_sidecar, _add_bench, _add_up, _add_render, _add_demo,
                _add_pipeline, _add_dashboard, _add_keys, _add_audit]


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
