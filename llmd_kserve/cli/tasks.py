"""Subcommands that do one job and exit: ``bench``, ``render``, ``demo``, ``pipeline``, ``keys``, ``audit``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from llmd_kserve.cli.args import check_output, csv_list, non_negative_float, positive_float, positive_int, rates
from llmd_kserve.defaults import (
    DEFAULT_PROFILE,
    WORKLOAD_KINDS,
)

log = logging.getLogger(__name__)


# --- bench ----------------------------------------------------------------------------------------------------
def add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark an OpenAI endpoint (or the cluster simulator): TTFT, TPOT, goodput, hits")
    p.add_argument("--target", default=None, help="base URL of the router (or an engine), e.g. http://127.0.0.1:8080")
    p.add_argument("--workload", choices=WORKLOAD_KINDS, default=None,
                   help="synthetic workload (default shared-prefix; trace with --trace)")
    t = p.add_argument_group("trace replay")
    t.add_argument("--trace", default=None, help="replay a request trace file (timestamps kept; see --format)")
    t.add_argument("--format", dest="trace_format", default="mooncake",
                   help="trace format: mooncake = JSONL of timestamp (ms), input_length, output_length, hash_ids")
    t.add_argument("--time-scale", type=positive_float, default=1.0,
                   help="multiply the recorded gaps between requests (0.1 replays ten times faster)")
    t.add_argument("--max-requests", type=positive_int, default=None, help="replay at most this many requests")
    t.add_argument("--window", default=None, metavar="START:END",
                   help="replay the requests between these seconds of the trace (either side may be empty)")
    t.add_argument("--block-size", dest="block_tokens", type=positive_int, default=512,
                   help="tokens per trace hash id (512 for Mooncake)")
    t.add_argument("--max-model-len", type=positive_int, default=None,
                   help="fit requests to this context (default: the simulated engines' or the target's /v1/models)")
    t.add_argument("--fit", choices=["clip", "drop"], default="clip",
                   help="a request longer than the context: clip it (keeps its leading blocks) or leave it out")
    t.add_argument("--describe", action="store_true",
                   help="print the trace's structure (span, rate, lengths, prefix sharing) and exit")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="workload parameter, e.g. num_groups=16 (repeat)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--rate", type=float, default=None, help="open-loop arrivals per second")
    g.add_argument("--concurrency", type=positive_int, default=None, help="closed loop with this many requests in flight")
    g.add_argument("--sweep", type=rates, default=None, help="rates R1,R2,… (one run each)")
    p.add_argument("--arrival", choices=["poisson", "constant"], default="poisson", help="open-loop arrival process")
    p.add_argument("--num-requests", type=positive_int, default=None, help="requests per run (scales the workload)")
    p.add_argument("--slo-ttft", type=positive_float, default=None, help="goodput SLO on TTFT, seconds")
    p.add_argument("--slo-tpot", type=positive_float, default=None, help="goodput SLO on TPOT, seconds")
    p.add_argument("--json", default=None, help="write the bench JSON here (with --describe: the description)")
    p.add_argument("--report-format", choices=["bench", "llmd-br"], default="bench",
                   help="what --json holds: the bench JSON, or llm-d Benchmark Reports v0.2.1 (one file per run)")
    p.add_argument("--html", default=None, help="write a self-contained plotly HTML report here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="model name (default: the target's first /v1/models id)")
    p.add_argument("--engines-metrics", type=csv_list, default=None, help="engine URLs whose prefix-cache counters to diff")
    p.add_argument("--policy-label", default=None, help="name of this run in the report (e.g. the router config)")
    p.add_argument("--timeout", type=positive_float, default=600.0, help="per-request timeout, seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--sim", action="store_true", help="run in the virtual-time cluster simulator instead of HTTP")
    p.add_argument("--engines", type=int, default=8, help="simulated engines (--sim)")
    p.add_argument("--prefill", type=int, default=0, help="simulated prefill engines (--sim, with --decode)")
    p.add_argument("--decode", type=int, default=0, help="simulated decode engines (--sim, with --prefill)")
    p.add_argument("--config", default="default",
                   help="router config for --sim (with --prefill: default = pd-predicted-ttft)")
    p.add_argument("--routers", type=positive_int, default=1,
                   help="router replicas in front of the simulated engines (--sim), each with its own state")
    p.add_argument("--balancer", choices=["round-robin", "random", "prefix-hash"], default="round-robin",
                   help="how requests are spread over the router replicas (--sim --routers N)")
    p.add_argument("--shared-load-delay", type=non_negative_float, default=None, metavar="SECONDS",
                   help="router replicas share their in-flight load, arriving this long after (--sim --routers N)")
    p.add_argument("--profile", default=DEFAULT_PROFILE,
                   help="latency profile of the simulated engines (--sim): a built-in name such as cpu-tiny-llama, "
                        "or a YAML/JSON file")
    _add_autoscale(p)
    p.set_defaults(func=_cmd_bench)


AUTOSCALE_POLICIES = ("headroom", "keda-queue", "static")


def _add_autoscale(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("autoscaling in the simulator (--sim; docs/autoscaling.md)")
    s.add_argument("--autoscale", choices=AUTOSCALE_POLICIES, default=None,
                   help="replicas start and stop during the run, from --engines: headroom (ours: predicted TTFT "
                        "headroom, router queue and KV usage, with hysteresis and a cooldown), keda-queue (KEDA on the "
                        "router's queue length: ceil(queue / --keda-target), HPA's scale-down stabilization) or static")
    s.add_argument("--min-replicas", type=positive_int, default=1, help="fewest replicas (default 1)")
    s.add_argument("--max-replicas", type=positive_int, default=16, help="most replicas (default 16)")
    s.add_argument("--startup-s", type=float, default=60.0,
                   help="seconds from asking for a replica until it takes requests (model load; default 60)")
    s.add_argument("--poll-s", type=positive_float, default=15.0, help="seconds between two polls (default 15)")
    s.add_argument("--keda-target", type=positive_float, default=2.0,
                   help="keda-queue: queued requests per replica (default 2)")
    s.add_argument("--stabilization-s", type=float, default=300.0,
                   help="keda-queue: HPA scale-down stabilization window, seconds (default 300)")
    s.add_argument("--cooldown-s", type=float, default=120.0,
                   help="headroom: calm seconds before each scale-down (default 120)")


def _autoscale(a: argparse.Namespace) -> dict[str, object] | None:
    """The ``--autoscale`` flags as ``autoscale_options`` keyword arguments (None without ``--autoscale``)."""
    if a.autoscale is None:
        return None
    from llmd_kserve.errors import ConfigError

    if not a.sim:
        raise ConfigError("--autoscale runs in the cluster simulator: add --sim", "autoscale")
    if not a.min_replicas <= a.engines <= a.max_replicas:
        raise ConfigError(f"--engines {a.engines} (the replicas at the start) must lie within --min-replicas "
                          f"{a.min_replicas} and --max-replicas {a.max_replicas}", "engines")
    if a.startup_s < 0 or a.stabilization_s < 0 or a.cooldown_s < 0:
        raise ConfigError("--startup-s, --stabilization-s and --cooldown-s must not be negative", "autoscale")
    slo = {"ttft_target_s": a.slo_ttft} if a.slo_ttft else {}
    return {"policy": a.autoscale, "min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
            "startup_s": a.startup_s, "poll_s": a.poll_s, "keda_target": a.keda_target,
            "stabilization_s": a.stabilization_s, "cooldown_s": a.cooldown_s, **slo}


def _cmd_bench(a: argparse.Namespace) -> int:
    from llmd_kserve.bench.runner import BenchOptions, bench_command

    check_output(a.json, "json")
    check_output(a.html, "html")
    write_html = None
    if a.html:
        from llmd_kserve.bench.report import require_plotly

        require_plotly("html")
        from llmd_kserve.viz.report_page import write_html
    simulator = None
    if a.sim:
        from llmd_kserve.cluster_sim import run_bench as simulator
    options = BenchOptions(
        target=a.target, workload=a.workload or ("trace" if a.trace else "shared-prefix"), trace=a.trace, rate=a.rate, concurrency=a.concurrency,
        sweep=tuple(a.sweep or ()), arrival=a.arrival, num_requests=a.num_requests, slo_ttft=a.slo_ttft,
        slo_tpot=a.slo_tpot, json_path=a.json, html_path=a.html, seed=a.seed,
        engines_metrics=tuple(a.engines_metrics or ()), policy_label=a.policy_label, model=a.model,
        overrides=tuple(a.set or ()), sim=a.sim, engines=a.engines, config=a.config, profile=a.profile,
        prefill=a.prefill, routers=a.routers, balancer=a.balancer, shared_load_delay=a.shared_load_delay,
        decode=a.decode, progress=not a.no_progress, timeout=a.timeout, trace_format=a.trace_format,
        time_scale=a.time_scale, max_requests=a.max_requests, window=a.window, block_tokens=a.block_tokens,
        max_model_len=a.max_model_len, fit=a.fit, describe=a.describe, report_format=a.report_format,
        autoscale=_autoscale(a))
    return bench_command(options, simulator, write_html)


# --- render ---------------------------------------------------------------------------------------------------
def add_render(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="render KServe manifests (ServingRuntime, InferenceServices, graph, RBAC)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--mode", choices=["sim", "aggregated", "pd"], default=None,
                   help="one mode as a flat kustomize dir (default: base/ + overlays/<mode>/ + llminferenceservice/)")
    p.add_argument("--spec", default=None, help="DeploymentSpec YAML/JSON file (default: the built-in defaults)")
    p.add_argument("--autoscale", action="store_true",
                   help="turn the spec's autoscaling on: a KEDA ScaledObject per engine pool on the router's signals "
                        "(the tree always has overlays/autoscale and overlays/autoscale-aggregated)")
    p.set_defaults(func=_cmd_render)


def _cmd_render(a: argparse.Namespace) -> int:
    from llmd_kserve.kube.render import autoscaled, write_mode, write_tree
    from llmd_kserve.kube.spec import DeploymentSpec, load_spec

    spec = load_spec(a.spec) if a.spec else DeploymentSpec()
    if a.autoscale:
        spec = autoscaled(spec)
    files = write_mode(a.out, spec.with_mode(a.mode)) if a.mode else write_tree(a.out, spec)
    print(f"wrote {len(files)} files under {a.out}")
    return 0


# --- demo -----------------------------------------------------------------------------------------------------
def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="routing policies side by side: 8 simulated engines + a small live stack (~4 min)")
    p.add_argument("--json", default=None, help="write the runs in the bench JSON schema (runs[].policy, .scale)")
    p.add_argument("--html", default="llmd-demo.html", help="HTML report path ('' for none)")
    p.add_argument("--quick", action="store_true", help="a reduced demo (smaller workloads, 2 live engines)")
    p.add_argument("--no-live", dest="live", action="store_false", help="skip the live HTTP runs")
    p.add_argument("--no-sim", dest="sim", action="store_false", help="skip the cluster-simulator runs")
    p.add_argument("--policies", type=csv_list, default=None,
                   help="router configs (default: the five shipped ones; on vLLM: round-robin, approx-prefix, "
                        "precise-prefix, default)")
    p.add_argument("--engine", choices=("sim", "vllm"), default="sim",
                   help="engines of the live phase: simulated processes, or 2 real vLLM replicas of the tiny model "
                        "on CPU (llmd-kserve vllm install; adds about 5 minutes)")
    p.add_argument("--vllm-python", default=None,
                   help="interpreter with vLLM (default: env LLMD_VLLM_PYTHON, else the nearest .venv-vllm)")
    p.add_argument("--profile", default=DEFAULT_PROFILE,
                   help="latency profile of the simulated engines (a built-in name such as cpu-tiny-llama, or a "
                        "YAML/JSON file); the demo's rates are sized for the default")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(a: argparse.Namespace) -> int:
    from llmd_kserve.bench.report import require_plotly
    from llmd_kserve.demo import run_demo

    check_output(a.json, "json")
    check_output(a.html, "html")
    if a.html:
        require_plotly("html")
    report = run_demo(quick=a.quick, json=a.json, html=a.html or None, live=a.live, sim=a.sim, policies=a.policies,
                      seed=a.seed, engine=a.engine, profile=a.profile,
                      vllm_python=a.vllm_python or os.environ.get("LLMD_VLLM_PYTHON") or None)
    return 0 if all(c["claim_met"] for c in report["workload"]["claims"] if c["claim_applies"]) else 1


# --- pipeline -------------------------------------------------------------------------------------------------
def add_pipeline(sub: argparse._SubParsersAction) -> None:
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


# --- keys, audit (governance) -----------------------------------------------------------------------------
def add_keys(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="virtual API keys: add (prints the key once), list, revoke")
    ks = p.add_subparsers(dest="keys_command", required=True)
    add = ks.add_parser("add", help="create a key; its plaintext is printed once and only its salted hash is kept")
    add.add_argument("--tenant", default="default")
    add.add_argument("--team", default=None)
    add.add_argument("--name", default=None)
    add.add_argument("--model", action="append", dest="models", default=None, help="allowed model (repeatable; default all)")
    add.add_argument("--priority", type=int, choices=range(10), default=0, metavar="0..9",
                     help="flow-control band (higher first)")
    add.add_argument("--rpm", type=positive_int, default=None, help="requests per minute")
    add.add_argument("--tpm", type=positive_int, default=None,
                     help="tokens per minute (prompt + completion); each request reserves prompt + n × max_tokens "
                          "when admitted and gets back what it did not use")
    add.add_argument("--token-budget", type=positive_int, default=None,
                     help="total tokens; a request whose prompt + n × max_tokens does not fit in what is left is "
                          "refused (429)")
    add.add_argument("--max-concurrency", type=positive_int, default=None,
                     help="requests of this key in flight at once (over it: queued with flow control, else 429)")
    add.add_argument("--admin", action="store_true", help="an operator key (admin routes) rather than a tenant's")
    ks.add_parser("list", help="the keys (never their secrets) as JSON lines")
    rv = ks.add_parser("revoke", help="revoke a key by id (routers reload the file within a second; a router "
                                      "that cannot read the file keeps its old keys and says so on /health)")
    rv.add_argument("key_id")
    for q in (add, *ks.choices.values()):
        if not any(x.dest == "file" for x in q._actions):
            q.add_argument("--file", required=True, help="the keys YAML file (router --keys-file)")
    p.set_defaults(func=_cmd_keys)


def _cmd_keys(a: argparse.Namespace) -> int:
    from llmd_kserve.governance.keys import add_key, load_keys, revoke_key

    if a.keys_command == "add":
        check_output(a.file, "--file")
        plaintext, rec = add_key(a.file, tenant=a.tenant, team=a.team, name=a.name, models=tuple(a.models or ()),
                                 priority=a.priority, rpm=a.rpm, tpm=a.tpm, token_budget=a.token_budget,
                                 max_concurrency=a.max_concurrency, admin=a.admin)
        print(json.dumps({"id": rec.id, "tenant": rec.tenant, "admin": rec.admin}), file=sys.stderr)
        print(plaintext)  # the only time it exists outside the client
    elif a.keys_command == "list":
        for rec in load_keys(a.file).values():
            print(json.dumps(rec.public()))
    else:
        rec = revoke_key(a.file, a.key_id)
        print(json.dumps({"id": rec.id, "revoked": True}))
    return 0


def add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="audit trail tools: verify the hash chain of JSONL audit files")
    aus = p.add_subparsers(dest="audit_command", required=True)
    v = aus.add_parser("verify", help="check FILE… (oldest first; a rotated set: file.1 file.2 … file) for edited, "
                                      "dropped or reordered records; exit 1 when broken")
    v.add_argument("files", nargs="+", metavar="FILE")
    v.add_argument("--expect-head", default=None,
                   help="a head hash kept elsewhere (the router logs it at each rotation and at exit): exit 1 "
                        "unless that record is still in the files")
    v.add_argument("--chain-key-file", default=None,
                   help="the router's --audit-chain-key-file, to check a keyed chain (default: env "
                        "LLMD_AUDIT_CHAIN_KEY); with a key, a chain that is not keyed is an error")
    v.add_argument("--partial", action="store_true",
                   help="accept a chain that starts after seq 1 (older rotated files deliberately left out)")
    p.set_defaults(func=_cmd_audit)


def _cmd_audit(a: argparse.Namespace) -> int:
    from llmd_kserve.cli.serve import audit_chain_key
    from llmd_kserve.governance.audit import verify

    rep = verify(a.files, key=audit_chain_key(a.chain_key_file, "chain-key-file"), partial=a.partial,
                 expect_head=a.expect_head)
    print(json.dumps({"ok": rep.ok, "records": rep.records, "first_seq": rep.first_seq, "last_seq": rep.last_seq,
                      "head": rep.head, "errors": rep.errors, "notes": rep.notes}, indent=1))
    return 0 if rep.ok else 1


SUBCOMMANDS = [add_bench, add_render, add_demo, add_pipeline, add_keys, add_audit]
"""Each adds its subparser (help order)."""
