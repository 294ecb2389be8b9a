"""Subcommands that run until stopped: ``engine``, ``router``, ``epp``, ``pd-sidecar``, ``up``, ``dashboard``."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from llmd_kserve.cli.args import csv_list, port_number, positive_float, positive_int, shipped_names
from llmd_kserve.defaults import (
    DEFAULT_CONFIG,
    DEFAULT_MODEL,
    DEFAULT_PROFILE,
    ENGINE_PORT,
    MAX_PROMPT_CHARS,
    ROUTER_PORT,
    SCRAPE_INTERVAL_S,
    STALL_FACTOR,
    STALL_FLOOR_S,
)
from llmd_kserve.errors import ConfigError

log = logging.getLogger(__name__)


# --- engine ---------------------------------------------------------------------------------------------------
def add_engine(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("engine", help="run a simulated vLLM replica (OpenAI API, /metrics, KV events)")
    p.add_argument("--host", default="127.0.0.1",
                   help="listen address (default loopback; engines have no auth: expose them to the router only)")
    p.add_argument("--port", type=port_number, default=ENGINE_PORT, help="HTTP port (0: any free port)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="served model name")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="latency profile name or YAML/JSON file")
    p.add_argument("--num-blocks", type=int, default=None, help="KV blocks (default: the profile's)")
    p.add_argument("--block-size", type=int, default=None, help="default: the profile's (16)")
    p.add_argument("--max-num-seqs", type=int, default=None, help="default: the profile's (1024 for h100-llama8b)")
    p.add_argument("--max-num-batched-tokens", type=int, default=None, help="per-step token budget")
    p.add_argument("--max-model-len", type=int, default=None, help="default: the profile's (16384)")
    p.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                   help="schedule the next step while the current one runs (default: the profile's; vLLM on GPU "
                        "does, vLLM 0.32 on CPU does not)")
    p.add_argument("--vllm-version", choices=["0.26", "0.32"], default=None,
                   help="follow this vLLM's rules where versions differ: prefix-cache counting, cached tokens after a "
                        "P/D transfer (default: the profile's)")
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
    p.add_argument("--hang-after", type=int, default=None,
                   help="fault: after N requests generation hangs for good while /health and /metrics still answer")
    p.add_argument("--slow-start", type=float, default=0.0, help="seconds /health answers 503 after start")
    p.set_defaults(func=_cmd_engine)


def _cmd_engine(a: argparse.Namespace) -> int:
    from llmd_kserve.engine_sim.options import EngineOptions
    from llmd_kserve.engine_sim.server import serve

    return serve(EngineOptions(
        host=a.host, port=a.port, model=a.model, profile=a.profile, num_blocks=a.num_blocks, block_size=a.block_size,
        max_num_seqs=a.max_num_seqs, max_num_batched_tokens=a.max_num_batched_tokens, max_model_len=a.max_model_len,
        async_scheduling=a.async_scheduling, vllm_version=a.vllm_version, kv_events_endpoint=a.kv_events_endpoint, kv_events_topic=a.kv_events_topic, role=a.role,
        kv_events_replay_endpoint=a.kv_events_replay_endpoint,
        kv_link_gbps=a.kv_link_gbps, time_scale=a.time_scale, seed=a.seed, error_rate=a.error_rate,
        crash_after=a.crash_after, crash_exits_process=True, slow_start=a.slow_start,
        hang_after=a.hang_after))


# --- router ---------------------------------------------------------------------------------------------------
_TOKENIZER_HELP = ("how the router tokenizes prompts to match them against the engines' KV cache: 'sim' (default, "
                   "the simulated engines' tokenizer), 'render' (ask the engines: vLLM's render endpoints, else its "
                   "/tokenize), or the model's directory or tokenizer.json (its own special tokens and chat template)")
_BLOCK_SIZE_HELP = ("KV block size of every engine (default: each engine's own, from its KV events or "
                    "vllm:cache_config_info)")


def add_router(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("router", help="run the KV-cache- and load-aware OpenAI router")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default loopback; 0.0.0.0 for all)")
    p.add_argument("--port", type=port_number, default=ROUTER_PORT, help="HTTP port (0: any free port)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"shipped config name ({shipped_names()}) or EndpointPickerConfig YAML file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--endpoints", type=csv_list, default=None, help="URL[,URL…]; URL may carry #role=prefill&kv=tcp://h:p")
    g.add_argument("--endpoints-file", default=None, help="YAML/JSON list of endpoints, watched for changes")
    g.add_argument("--discover-selector", default=None,
                   help="discover engine pods in Kubernetes by label selector (watch), e.g. app=llmd-engine")
    p.add_argument("--discover-namespace", default=None, help="namespace to watch (default: the pod's own)")
    p.add_argument("--scrape-interval", type=float, default=SCRAPE_INTERVAL_S, help="seconds between /metrics polls")
    p.add_argument("--scrape-idle-interval", type=float, default=5.0,
                   help="seconds between /metrics polls of an endpoint without requests (0: none while idle; "
                        "<= --scrape-interval: fixed-rate polling)")
    p.add_argument("--tokenizer", default=None, help=_TOKENIZER_HELP)
    p.add_argument("--block-size", type=positive_int, default=None, help=_BLOCK_SIZE_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="latency profile for the predicted-TTFT scorer")
    p.add_argument("--max-attempts", type=int, default=3, help="upstream attempts when failing before the first byte")
    p.add_argument("--served-model", action="append", dest="served_models", default=None,
                   help="model name to accept and list (repeatable; default: the endpoints' /v1/models)")
    p.add_argument("--max-prompt-chars", type=int, default=MAX_PROMPT_CHARS,
                   help="reject requests whose text (prompt, every string in messages, tools, documents) has more "
                        "characters with 413; 0: no limit")
    p.add_argument("--ready-kv-grace", type=float, default=5.0, metavar="S",
                   help="GET /ready waits for KV events from each engine; an idle engine that has cached prompts "
                        "counts as warm after this many seconds of silence on a connected stream (default %(default)g)")
    p.add_argument("--admin", action="store_true",
                   help="serve GET/POST /admin/config (config hot reload): an operator key when keys are "
                        "configured (keys add --admin, or an --api-keys-file token), else loopback clients only; "
                        "POST as application/json or application/yaml; every change is logged and audited")
    _add_ttft_slo(p)
    _add_router_limits(p)
    _add_router_governance(p)
    p.set_defaults(func=_cmd_router)


def _add_router_limits(p: argparse.ArgumentParser) -> None:
    """Limits and timeouts (issue 9): every one a RouterSettings field of the same name."""
    g = p.add_argument_group("limits and timeouts")
    g.add_argument("--max-prompt-tokens", type=int, default=131_072,
                   help="reject prompts of more tokens (all prompts of a batch; token ids count) with 413; 0: none")
    g.add_argument("--max-batch-size", type=int, default=256, help="prompts per completions request; 0: no limit")
    g.add_argument("--max-body-bytes", type=positive_int, default=16 << 20, help="request body limit (413 above)")
    g.add_argument("--connect-timeout", type=positive_float, default=5.0, help="seconds to connect to an engine")
    g.add_argument("--first-byte-timeout", type=positive_float, default=120.0,
                   help="seconds until an engine's response headers (and a stream's first event); retried elsewhere")
    g.add_argument("--idle-timeout", type=positive_float, default=60.0,
                   help="seconds an engine may send nothing mid-response (the stream then ends with an error event)")
    g.add_argument("--eject-s", type=positive_float, default=5.0,
                   help="seconds an engine that timed out or refused connections is left out (doubles on repeats)")
    _add_stall_flags(g)
    g.add_argument("--header-timeout", type=positive_float, default=15.0,
                   help="seconds a client may take to send its request headers (and stay idle between requests)")
    g.add_argument("--body-timeout", type=positive_float, default=30.0, help="seconds a client may take to send a body")
    g.add_argument("--drain-timeout", type=positive_float, default=10.0,
                   help="on SIGTERM/SIGINT, seconds in-flight requests may finish (a second signal exits at once)")
    g.add_argument("--http-server", choices=("lean", "aiohttp"), default="lean",
                   help="lean: the completion routes on a lean HTTP/1.1 protocol, other routes on aiohttp; "
                   "aiohttp: every route on aiohttp")


def _add_stall_flags(g: argparse._ArgumentGroup) -> None:
    """Stall detection (``control.stalls``), for the router and the EPP."""
    g.add_argument("--stall-factor", type=float, default=STALL_FACTOR,
                   help="an engine sending nothing for this many times a request's predicted time (first token, or "
                        "between tokens) is suspect: no new requests, waiting ones retried elsewhere (router), back "
                        "when a one-token probe answers; 0: off")
    g.add_argument("--stall-floor", type=positive_float, default=STALL_FLOOR_S,
                   help="the shortest stall budget, seconds (default %(default)g)")


def _add_ttft_slo(p: argparse.ArgumentParser) -> None:
    """The deployment's TTFT target for the autoscaling signal (router and EPP)."""
    p.add_argument("--ttft-slo-ms", type=positive_float, default=None,
                   help="the deployment's TTFT target in ms: llmd_router_ttft_headroom_seconds (the autoscaling "
                        "signal) is the best endpoint's predicted TTFT headroom against it (default: not exported)")


def _ttft_slo_s(a: argparse.Namespace) -> float | None:
    return a.ttft_slo_ms / 1e3 if a.ttft_slo_ms is not None else None


def _add_router_governance(p: argparse.ArgumentParser) -> None:
    """Operator and virtual keys, guardrails, flow control and the audit trail (``router`` and ``epp``): RouterSettings
    fields of the same name (:func:`_governance_settings`)."""
    g = p.add_argument_group("governance")
    g.add_argument("--api-keys-file", default=None,
                   help="file of operator bearer tokens, one per line (or env LLMD_ROUTER_API_KEYS=k1,k2): accepted "
                        "on every route, /admin, /debug and /metrics included; give tenants virtual keys (--keys-file)")
    g.add_argument("--audit", choices=["off", "hash", "full"], default="off",
                   help="audit log of routed prompts on logger llmd_kserve.audit (hash: salted HMAC-SHA256 only; "
                        "LLMD_AUDIT_SALT keeps the salt across restarts)")
    g.add_argument("--keys-file", default=None, help="YAML virtual keys (llmd-kserve keys add), reloaded on change")
    g.add_argument("--guardrails-file", default=None, help="YAML guardrail hooks (blocklist, pii-redaction)")
    g.add_argument("--audit-file", default=None,
                   help="hash-chained JSONL audit trail (--audit full: redacted text instead of salted hashes)")
    g.add_argument("--audit-fsync", choices=["every", "interval"], default="every",
                   help="every: each record is written and fsynced before the request goes on (group commit); "
                        "interval: written before it goes on, fsynced every --audit-fsync-interval s. Either way a "
                        "request whose record cannot be written gets 503")
    g.add_argument("--audit-fsync-interval", type=positive_float, default=1.0)
    g.add_argument("--audit-max-bytes", type=positive_int, default=None, help="rotate the audit file at this size")
    g.add_argument("--audit-max-age", type=positive_float, default=None, dest="audit_max_age_s",
                   help="rotate the audit file after this many seconds")
    g.add_argument("--audit-chain-key-file", default=None,
                   help="file holding a secret (16+ bytes) that keys the audit chain (HMAC-SHA256), so nobody without "
                        "it can re-hash an edited log; default: env LLMD_AUDIT_CHAIN_KEY, else an unkeyed chain")
    g.add_argument("--flow-per-endpoint", type=positive_int, default=None,
                   help="flow control: requests in flight per endpoint before the rest queue (priority, tenant); "
                        "without it a key's --max-concurrency is still enforced (429 over it)")
    g.add_argument("--flow-band-capacity", type=positive_int, default=1024, help="queued requests per priority band")
    g.add_argument("--flow-ttl", type=positive_float, default=30.0, dest="flow_ttl_s",
                   help="seconds a request may wait in the queue (then 503, x-llmd-drop-reason: ttl_expired)")
    g.add_argument("--flow-headroom", type=positive_int, default=1, dest="flow_headroom",
                   help="flow-control slots kept for a tenant that has none in flight, so a flooding tenant cannot "
                        "take them all (default 1)")
    g.add_argument("--no-turn-priority", action="store_false", dest="turn_priority",
                   help="flow control: queue a live session's next turn like any other request (by default it goes "
                        "before new sessions' first turns of its priority)")
    g.add_argument("--state-url", default=None,
                   help="redis://host:port/db: keep rate limits, token budgets and token spend in this Redis, shared "
                        "by every router and EPP replica pointing at it and kept across restarts (default: in memory)")
    g.add_argument("--state-failure-policy", default="closed",
                   help="when Redis cannot be reached: closed (refuse with 503) or open (admit unchecked), or per "
                        "kind, e.g. budget=closed,rate=open (default closed)")
    g.add_argument("--shared-sessions", action="store_true",
                   help="keep session homes and previous_response_id pins in the --state-url Redis too, so a "
                        "conversation stays on its home endpoint whichever replica its next turn reaches (fails "
                        "open: with Redis unreachable a turn is placed by this replica alone, counted in "
                        "llmd_router_state_errors_total)")


_GOVERNANCE_FLAGS = ("keys_file", "guardrails_file", "audit_file", "audit_fsync", "audit_fsync_interval",
                     "audit_max_bytes", "audit_max_age_s", "flow_per_endpoint", "flow_band_capacity", "flow_ttl_s",
                     "flow_headroom", "turn_priority", "state_url", "state_failure_policy", "shared_sessions")


def audit_chain_key(key_file: str | None, flag: str) -> bytes | None:
    """The audit chain key from ``key_file`` or env ``LLMD_AUDIT_CHAIN_KEY`` (None: neither); a one-line error."""
    from llmd_kserve.governance.audit import chain_key

    try:
        return chain_key(key_file, os.environ)
    except OSError as exc:
        raise ConfigError(f"cannot read the audit chain key: {exc.strerror or exc}", key_file or flag) from None
    except ValueError as exc:
        raise ConfigError(str(exc), flag) from None


def _governance_settings(a: argparse.Namespace) -> dict[str, Any]:
    """The RouterSettings fields of :func:`_add_router_governance`'s options (one-line errors for unreadable files)."""
    keys = csv_list(os.environ.get("LLMD_ROUTER_API_KEYS", ""))
    if a.api_keys_file:
        try:
            with open(a.api_keys_file) as f:
                keys += [line.strip() for line in f if line.strip() and not line.startswith("#")]
        except OSError as exc:
            raise ConfigError(f"cannot read API keys file: {exc.strerror or exc}", a.api_keys_file) from exc
    if a.audit != "off":  # audit lines go to the root handler even when the rest logs at WARNING
        logging.getLogger("llmd_kserve.audit").setLevel(logging.INFO)
    return {"api_keys": tuple(keys), "audit": a.audit, "audit_salt": os.environ.get("LLMD_AUDIT_SALT") or None,
            **{n: getattr(a, n) for n in _GOVERNANCE_FLAGS},
            "audit_chain_key": audit_chain_key(a.audit_chain_key_file, "audit-chain-key-file") if a.audit_file else None}


def _cmd_router(a: argparse.Namespace) -> int:
    from llmd_kserve.aio import relax_gc
    from llmd_kserve.control.settings import RouterSettings
    from llmd_kserve.router.app import serve

    settings = RouterSettings(
        config=a.config, scrape_interval=a.scrape_interval, tokenizer=a.tokenizer, seed=a.seed, profile=a.profile,
        block_size=a.block_size, scrape_idle_interval=a.scrape_idle_interval or None, max_attempts=a.max_attempts,
        max_prompt_chars=a.max_prompt_chars or None, served_models=tuple(a.served_models or ()),
        max_prompt_tokens=a.max_prompt_tokens or None, max_batch_size=a.max_batch_size or None,  # 0: no limit
        max_body_bytes=a.max_body_bytes, connect_timeout=a.connect_timeout, first_byte_timeout=a.first_byte_timeout,
        idle_timeout=a.idle_timeout, eject_s=a.eject_s, header_timeout=a.header_timeout, body_timeout=a.body_timeout,
        stall_factor=a.stall_factor, stall_floor_s=a.stall_floor,
        drain_timeout=a.drain_timeout, http_server=a.http_server, admin=a.admin, ttft_slo_s=_ttft_slo_s(a),
        ready_kv_grace_s=a.ready_kv_grace,
        **_governance_settings(a))
    relax_gc()
    return serve(settings, host=a.host, port=a.port, endpoints=a.endpoints, endpoints_file=a.endpoints_file,
                 discover_selector=a.discover_selector, discover_namespace=a.discover_namespace)


# --- epp (Gateway API Endpoint Picker) ----------------------------------------------------------------------
def add_epp(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("epp", help="serve the scheduler as a Gateway API Endpoint Picker (Envoy ext_proc gRPC)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default loopback; the manifests pass 0.0.0.0)")
    p.add_argument("--grpc-port", type=port_number, default=9002, help="ext_proc + gRPC health port (0: any free port)")
    p.add_argument("--metrics-port", type=port_number, default=9090, help="Prometheus /metrics, /health, /debug/decisions")
    p.add_argument("--http-pick-port", type=port_number, default=None,
                   help="also serve the pick over plain HTTP here, for an Envoy that calls it through ext_authz "
                        "(cheaper than ext_proc; see docs/gateway.md for what it cannot do)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"shipped config name ({shipped_names()}) or EndpointPickerConfig YAML file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--endpoints", type=csv_list, default=None, help="URL[,URL…] of the pool (ip:port as Envoy dials them)")
    g.add_argument("--endpoints-file", default=None, help="YAML/JSON list of endpoints, watched for changes")
    g.add_argument("--discover-selector", default=None, help="InferencePool selector: follow ready pods by label")
    p.add_argument("--discover-namespace", default=None, help="namespace to watch (default: the pod's own)")
    p.add_argument("--target-ports", type=csv_list, default=["8000"], help="pool targetPorts (data-parallel ranks)")
    p.add_argument("--kv-events-port", type=port_number, default=5557, help="KV-event port of rank 0 on each pod")
    p.add_argument("--response-mode", choices=["full", "headers", "none"], default="full",
                   help="full: response bodies stream through the EPP (usage, cache accounting); headers: no response "
                        "bodies (cheaper; no usage; load released at end of stream); none: two gRPC round trips per "
                        "request, the body buffered by Envoy, nothing of the response (as headers otherwise; with "
                        "Envoy failing open, answers under way survive the EPP going away). Must match Envoy's config")
    p.add_argument("--saturation-queue", type=int, default=5, help="waiting requests that saturate an endpoint")
    p.add_argument("--saturation-kv", type=float, default=0.8, help="KV-cache usage that saturates an endpoint")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="seconds open streams get after SIGTERM")
    _add_leader_flags(p.add_argument_group("hot standby (leader election on a Kubernetes Lease)"))
    _add_stall_flags(p.add_argument_group("stall detection"))
    g = p.add_argument_group("limits (checked before scheduling; each defaults to the router's own)")
    g.add_argument("--max-prompt-chars", type=int, default=None, help="reject prompts of more characters with 413; 0: none")
    g.add_argument("--max-prompt-tokens", type=int, default=None,
                   help="reject prompts of more tokens (all prompts of a batch; token ids count) with 413; 0: none")
    g.add_argument("--max-batch-size", type=int, default=None, help="prompts per completions request; 0: no limit")
    g.add_argument("--max-body-bytes", type=positive_int, default=None, help="request body limit (413 above)")
    p.add_argument("--scrape-interval", type=positive_float, default=SCRAPE_INTERVAL_S, help="seconds between /metrics polls")
    p.add_argument("--tokenizer", default=None, help=_TOKENIZER_HELP)
    p.add_argument("--block-size", type=positive_int, default=None, help=_BLOCK_SIZE_HELP)
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="latency profile for the predicted-TTFT scorer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool-name", default=None,
                   help="the InferencePool's name: also export llm-d's inference_pool_* gauges (label name=...)")
    _add_ttft_slo(p)
    _add_router_governance(p)
    p.set_defaults(func=_cmd_epp)


def _add_leader_flags(g: argparse._ArgumentGroup) -> None:
    """Leader election (``kube.leader``): client-go's flags and defaults."""
    g.add_argument("--leader-elect", action="store_true",
                   help="run as one of several replicas: only the holder of the Lease serves picks (the others are "
                        "warm standbys, readiness NOT_SERVING) and a standby takes over when the leader is gone")
    g.add_argument("--lease-name", default="llmd-kserve-epp", help="the coordination.k8s.io/v1 Lease (default %(default)s)")
    g.add_argument("--lease-namespace", default=None, help="its namespace (default: the pod's own)")
    g.add_argument("--lease-identity", default=None,
                   help="this replica's holderIdentity (default: env POD_NAME, else host name and process id)")
    g.add_argument("--lease-duration", type=positive_int, default=15,
                   help="seconds a standby waits, from the last renewal it saw, before taking over (default 15)")
    g.add_argument("--renew-deadline", type=positive_float, default=10.0,
                   help="seconds the leader keeps trying to renew before it stops serving (default 10)")
    g.add_argument("--retry-period", type=positive_float, default=2.0,
                   help="seconds between tries: the leader's renewals, a standby's reads (default 2)")


def _lease_settings(a: argparse.Namespace) -> Any:
    """``LeaseSettings`` of the leader-election flags (None without ``--leader-elect``)."""
    if not a.leader_elect:
        return None
    import socket

    from llmd_kserve.kube.discovery import in_cluster_namespace
    from llmd_kserve.kube.leader import LeaseSettings

    identity = a.lease_identity or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    return LeaseSettings(a.lease_name, a.lease_namespace or os.environ.get("POD_NAMESPACE") or in_cluster_namespace(),
                         identity, a.lease_duration, a.renew_deadline, a.retry_period)


def _cmd_epp(a: argparse.Namespace) -> int:
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # gRPC's C core logs to stderr; our errors say it in one line
    from llmd_kserve.control.settings import RouterSettings
    from llmd_kserve.epp.picker import Saturation
    from llmd_kserve.epp.run import serve
    from llmd_kserve.epp.server import EppSettings

    try:
        ports = tuple(int(p) for p in a.target_ports)
    except ValueError:
        raise ConfigError(f"must be ports like 8000,8001, got {','.join(a.target_ports)}", "target-ports") from None
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise ConfigError("must be 1..65535", "target-ports")
    limits = {name: getattr(a, name) or None for name in ("max_prompt_chars", "max_prompt_tokens", "max_batch_size")
              if getattr(a, name) is not None}  # 0: no limit; not given: the router's default
    body = {} if a.max_body_bytes is None else {"max_body_bytes": a.max_body_bytes}
    epp = EppSettings(response_mode=a.response_mode, saturation=Saturation(a.saturation_queue, a.saturation_kv),
                      drain_timeout=a.drain_timeout, lease=_lease_settings(a), **body)
    router = RouterSettings(config=a.config, scrape_interval=a.scrape_interval, tokenizer=a.tokenizer,
                            profile=a.profile, seed=a.seed, block_size=a.block_size, **limits,
                            stall_factor=a.stall_factor, stall_floor_s=a.stall_floor, ttft_slo_s=_ttft_slo_s(a),
                            pool_name=a.pool_name,
                            **_governance_settings(a))
    return serve(host=a.host, grpc_port=a.grpc_port, metrics_port=a.metrics_port, pick_port=a.http_pick_port,
                 endpoints=a.endpoints,
                 endpoints_file=a.endpoints_file, discover_selector=a.discover_selector,
                 discover_namespace=a.discover_namespace, target_ports=ports, kv_events_port=a.kv_events_port,
                 epp=epp, router=router)


def add_pd_sidecar(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pd-sidecar", help="next to a decode engine: run the P/D handshake the EPP asks for")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default loopback; the manifests pass 0.0.0.0)")
    p.add_argument("--port", type=port_number, default=8000, help="port the pool lists for this decode endpoint")
    p.add_argument("--decode", required=True, help="the local decode engine's URL, e.g. http://127.0.0.1:8200")
    p.add_argument("--prefill-endpoints", type=csv_list, required=True,
                   help="the pool's prefill endpoints (URL or host:port); any other x-prefiller-host-port is refused")
    p.add_argument("--prefill-timeout", type=positive_float, default=30.0, help="seconds for the prefill hop")
    p.set_defaults(func=_cmd_pd_sidecar)


def _cmd_pd_sidecar(a: argparse.Namespace) -> int:
    from llmd_kserve.epp.sidecar import serve

    return serve(decode=a.decode, prefill_endpoints=a.prefill_endpoints, host=a.host, port=a.port,
                 prefill_timeout_s=a.prefill_timeout)


# --- up -------------------------------------------------------------------------------------------------------
def add_up(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start engines (simulated or real vLLM, or use vLLM URLs), the router and "
                       "Prometheus locally")
    p.add_argument("--engine", choices=["sim", "vllm"], default="sim",
                   help="sim: simulated engines; vllm: real vLLM servers from the vLLM environment "
                        "(llmd-kserve vllm install)")
    p.add_argument("--engines", type=int, default=2, help="engines (role both)")
    p.add_argument("--prefill", type=int, default=0, help="prefill engines (with --decode)")
    p.add_argument("--decode", type=int, default=0, help="decode engines (with --prefill)")
    p.add_argument("--config", default="default",
                   help="router scheduler config name or file (with --prefill: default = pd-predicted-ttft)")
    p.add_argument("--vllm", type=csv_list, default=None, help="use these engine URLs instead of starting engines")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=ROUTER_PORT,
                   help="router port (with --routers > 1: the balancer's; the replicas take free ports)")
    p.add_argument("--time-scale", type=float, default=1.0, help="engine time scale (>1 slower than real time)")
    p.add_argument("--prometheus", action=argparse.BooleanOptionalAction, default=None,
                   help="run Prometheus (default: when the binary is installed)")
    p.add_argument("--engine-arg", dest="engine_args", action="append", default=None, metavar="FLAG",
                   help="extra flag for every engine, e.g. --engine-arg=--num-blocks=2000 (repeat)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", default=DEFAULT_PROFILE,
                   help="latency profile of the simulated engines and the router's latency model: a built-in name "
                        "(h100-llama8b, cpu-tiny-llama, ...) or a YAML/JSON file")
    p.add_argument("--log-dir", default=None, help="keep process logs here (default: a temp dir, removed on exit)")
    p.add_argument("--state-file", default=None, help="write URLs and pids as JSON here once healthy (removed on exit)")
    p.add_argument("--gateway", choices=["none", "envoy"], default="none",
                   help="envoy: a real Envoy in front, our scheduler as its Endpoint Picker (ext_proc)")
    p.add_argument("--response-mode", choices=["full", "headers", "none"], default="full",
                   help="with --gateway envoy: stream response bodies through the EPP, or only the end of each "
                        "exchange (headers), or nothing of the response (none)")
    p.add_argument("--fail-open", action="store_true",
                   help="with --gateway envoy: while the EPP is down (up restarts it), send requests round-robin "
                        "to the engines, without its validation, limits and scheduling (client kv_transfer_params "
                        "are still dropped)")
    p.add_argument("--router-arg", dest="router_args", action="append", default=None, metavar="FLAG",
                   help="extra flag for every router, e.g. --router-arg=--keys-file=keys.yaml (repeat); with "
                        "--routers N, --audit-file=PATH gives each replica its own PATH.router-<i>")
    g = p.add_argument_group("router replicas")
    g.add_argument("--routers", type=positive_int, default=1,
                   help="router replicas over the same engines, a local Envoy balancing over them (health checks "
                        "on each one's /ready, retries on another on connect failure or reset); the OpenAI URL "
                        "printed is Envoy's")
    g.add_argument("--balancer", choices=["round-robin", "least-request"], default="round-robin",
                   help="how Envoy spreads requests over the replicas (with --routers > 1)")
    state = g.add_mutually_exclusive_group()
    state.add_argument("--redis", action="store_true",
                   help="start a local redis-server (append-only file) with the stack: the routers share rate "
                        "limits, token budgets and spend in it")
    state.add_argument("--state-url", default=None, metavar="URL",
                   help="redis://host:port/db the routers share rate limits, token budgets and spend in")
    g = p.add_argument_group("real vLLM engines (--engine vllm)")
    g.add_argument("--model", default=None,
                   help="Hugging Face model directory (default: a tiny random-weights Llama, built once in "
                        "~/.cache/llmd-kserve; llmd-kserve tiny-model DIR writes one)")
    g.add_argument("--kv-cache-tokens", type=positive_int, default=16384,
                   help="KV cache per replica, in tokens (its bytes computed from the model's config)")
    g.add_argument("--vllm-python", default=None,
                   help="interpreter with vLLM (default: env LLMD_VLLM_PYTHON, else the nearest .venv-vllm)")
    p.set_defaults(func=_cmd_up)


def _cmd_up(a: argparse.Namespace) -> int:
    from llmd_kserve.stack import StackConfig, run_up

    if a.engine != "vllm" and (a.model or a.vllm_python):
        raise ConfigError("--model and --vllm-python need --engine vllm", "engine")
    return run_up(StackConfig(
        engines=a.engines, engine=a.engine, prefill=a.prefill, decode=a.decode, config=a.config,
        vllm_urls=tuple(a.vllm or ()), host=a.host, port=a.port, time_scale=a.time_scale, prometheus=a.prometheus,
        engine_args=tuple(a.engine_args or ()), seed=a.seed, profile=a.profile, log_dir=a.log_dir, gateway=a.gateway,
        response_mode=a.response_mode, fail_open=a.fail_open, model=a.model, kv_cache_tokens=a.kv_cache_tokens,
        vllm_python=a.vllm_python or os.environ.get("LLMD_VLLM_PYTHON") or None,
        router_args=tuple(a.router_args or ()), routers=a.routers, balancer=a.balancer, redis=a.redis,
        state_url=a.state_url), state_file=a.state_file)


# --- dashboard ------------------------------------------------------------------------------------------------
def add_dashboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="serve the live dashboard (hit rate, latency, load, last decision) as a web page")
    p.add_argument("--router", required=True, help="router base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--prometheus", default=None, help="read live numbers from this Prometheus (default: the router)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve the page on (default: this host only)")
    p.add_argument("--port", type=port_number, default=8050, help="page port (0: any free port)")
    p.add_argument("--interval", type=positive_float, default=2.0, help="seconds between refreshes")
    p.add_argument("--api-key-env", default="LLMD_API_KEY", metavar="VAR",
                   help="environment variable holding an operator key of the router, when it has keys (default "
                        "LLMD_API_KEY); the page itself has no login: keep it on this host")
    p.set_defaults(func=_cmd_dashboard)


def _cmd_dashboard(a: argparse.Namespace) -> int:
    from llmd_kserve.viz.dashboard import serve

    return serve(a.router, a.prometheus, a.host, a.port, a.interval, os.environ.get(a.api_key_env) or None)


SUBCOMMANDS = [add_engine, add_router, add_epp, add_pd_sidecar, add_up, add_dashboard]
"""Each adds its subparser (help order)."""
