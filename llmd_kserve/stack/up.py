"""``llmd-kserve up``: start the local stack, print its URLs, and keep it up until Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from llmd_kserve.aio import raise_fd_limit
from llmd_kserve.stack.local import LocalStack, StackConfig
from llmd_kserve.stack.procs import signals_held


def run_up(cfg: StackConfig, state_file: str | None = None) -> int:
    """Start the stack, print its URLs and wait until Ctrl-C or SIGTERM; exit 1 if a component dies (an EPP that
    exits is restarted: ``LocalStack.supervise``).

    ``state_file``: once healthy, write ``{router_url, engine_urls, endpoints, prometheus_url, pids, log_dir, routers,
    balancer, state_url}`` there as JSON (``routers``: each replica's ``url`` and ``pid`` with ``--routers`` > 1, else
    empty; ``balancer``: Envoy's ``url``, ``admin_url`` and ``pid``, or null), for scripts and the pipelines' detached local target (``endpoints``: the router's endpoint specs,
    with ``#role=…&kv=…&replay=…``); removed on exit."""
    from rich.console import Console

    console = Console()

    def _sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _sigterm)
    # Python leaves SIGINT ignored when it started ignored (a background job of a script, nohup, some CI runners):
    # Ctrl-C must stop the stack whatever this process inherited.
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    raise_fd_limit()  # the router and engines inherit it
    stack = LocalStack(cfg)
    try:
        what = "vLLM engines (about a minute)" if cfg.engine == "vllm" and not cfg.vllm_urls else "engines"
        with console.status(f"starting {what}, router and Prometheus…"):
            stack.start()
        console.print(stack.describe())
        if state_file:
            _write_state(state_file, stack)
        console.print(f"OpenAI endpoint: [bold]{stack.router_url}/v1[/bold]   logs: {stack.log_dir}")
        if stack.prometheus_url:
            console.print(f"Prometheus: [bold]{stack.prometheus_url}[/bold]")
        console.print(f"try: llmd-kserve bench --target {stack.router_url} --rate 5 --num-requests 100")
        console.print("Ctrl-C stops everything.")
        restarts = replica_restarts = 0
        while not (dead := stack.supervise()):
            if stack.epp_restarts != restarts:
                restarts = stack.epp_restarts
                console.print(f"[yellow]the EPP exited; restarted it (restart {restarts})[/yellow]")
                if state_file:
                    _write_state(state_file, stack)  # its new pid
            if stack.replica_restarts != replica_restarts:
                replica_restarts = stack.replica_restarts
                console.print(f"[yellow]a router replica exited; restarted it (restart {replica_restarts})[/yellow]")
                if state_file:
                    _write_state(state_file, stack)
            time.sleep(0.5)
        console.print(f"[red]exited unexpectedly: {', '.join(dead)}; stopping[/red]")
        return 1
    except KeyboardInterrupt:
        console.print("stopping…")
        return 0
    finally:
        try:
            with signals_held():  # a second Ctrl-C is raised after the clean-up, not in the middle of it
                stack.stop()
                if state_file:
                    Path(state_file).unlink(missing_ok=True)
        finally:
            signal.signal(signal.SIGTERM, old)
            signal.signal(signal.SIGINT, old_int)


def _write_state(path: str, stack: LocalStack) -> None:
    """Write the state atomically (a reader never sees half a file)."""
    state = {"router_url": stack.router_url, "engine_urls": stack.engine_base_urls, "endpoints": stack.engine_urls,
             "prometheus_url": stack.prometheus_url, "pids": [os.getpid(), *stack.pids], "log_dir": str(stack.log_dir),
             "routers": [{"url": p.url, "pid": p.popen.pid} for p in stack.replicas],
             "balancer": None if stack.balancer is None else {
                 "url": stack.router_url, "admin_url": stack.balancer.url, "pid": stack.balancer.popen.pid},
             "state_url": stack.state_url}
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)
