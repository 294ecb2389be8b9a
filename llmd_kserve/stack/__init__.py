"""The local stack behind `llmd-kserve up`: simulated or real vLLM engines, the router and Prometheus as supervised
processes.

Public API::

    StackConfig(engines=2, engine="sim", prefill=0, decode=0, config="default", vllm_urls=(), host="127.0.0.1",
                port=0, time_scale=1.0, prometheus=None, engine_args=(), router_args=(), startup_timeout=60.0, seed=0,
                model=None, kv_cache_tokens=16384, vllm_python=None, vllm_startup_timeout=600.0, profile="h100-llama8b")
        ``port=0`` picks a free router port; ``prometheus=None`` runs it when the binary is on PATH;
        ``engine="vllm"``: real vLLM servers (``stack.vllm``) from the vLLM venv (``llmd_kserve.vllm_env``) on
        ``model`` (default: the tiny model, ``llmd_kserve.tiny_model``), ``engine_args`` passed to each; ``profile``:
        the simulated engines' latency profile and the router's latency model.
        ``routers=N`` (> 1): N router processes behind a local Envoy (``balancer``: round-robin or least-request;
        health checks on each router's ``/ready``; retries on another replica), ``router_url`` is Envoy's;
        ``redis=True``: a local ``redis-server`` (append-only file) the routers share governance state in, or
        ``state_url="redis://…"``: an existing one.
    LocalStack(settings=None, **fields)     context manager; fields override ``settings`` (``config="round-robin"``)
        ``start()`` / ``stop()`` / ``restart_router(config)`` / ``restart_replica(i)`` / ``stop_redis()`` /
        ``start_redis_again()``
        .router_url, .engine_urls (router endpoint specs with ``#role=…&kv=…``), .engine_base_urls,
        .prometheus_url (None without Prometheus), .pids, .log_dir, .describe() -> rich Table,
        .router_urls (each replica's own URL), .replicas / .balancer / .redis (their processes), .state_url
    prometheus_available() -> bool
    run_up(StackConfig) -> int              what the CLI calls: start, print URLs, wait for Ctrl-C / SIGTERM

Every child runs in its own process group (``start_new_session``) and, started from the main thread, dies with
its parent (``PR_SET_PDEATHSIG``); ``stop()`` (also called at exit) sends SIGTERM to each group, then SIGKILL after
a grace period, so no process outlives the stack. Modules: ``procs`` (supervision), ``prometheus`` (its config),
``vllm`` (a real vLLM replica's flags), ``local`` (assembly), ``replicas`` (router replicas, their balancer and Redis),
``balancer`` (Envoy's bootstrap for them), ``redis`` (the local ``redis-server``), ``up`` (the CLI command).
"""

from llmd_kserve.stack.local import LocalStack, StackConfig
from llmd_kserve.stack.procs import free_port
from llmd_kserve.stack.prometheus import prometheus_available
from llmd_kserve.stack.up import run_up

__all__ = ["LocalStack", "StackConfig", "free_port", "prometheus_available", "run_up"]
