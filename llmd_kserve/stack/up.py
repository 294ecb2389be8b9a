"""``llmd-kserve up``: start the local stack, print its URLs, and keep it up until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from typing import Any

from llmd_kserve.stack.local import LocalStack, StackConfig


def run_up(*, engines: int = 2, prefill: int = 0, decode: int = 0, config: str = "default",
           vllm: Sequence[str] | None = None, host: str = "127.0.0.1", port: int = 8080, time_scale: float = 1.0,
           prometheus: bool | None = None, engine_args: Sequence[str] | None = None, seed: int = 0,
           log_dir: str | None = None, gateway: str = "none", response_mode: str = "full", fail_open: bool = False,
           **_: Any) -> int:
    """Start the stack, print its URLs and wait until Ctrl-C or SIGTERM; exit 1 if a component dies."""
    from rich.console import Console

    console = Console()
    cfg = StackConfig(engines=engines, prefill=prefill, decode=decode, config=config, vllm_urls=tuple(vllm or ()),
                      host=host, port=port, time_scale=time_scale, prometheus=prometheus,
                      engine_args=tuple(engine_args or ()), seed=seed, log_dir=log_dir,
                      gateway=gateway, response_mode=response_mode, fail_open=fail_open)

    def _sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _sigterm)
    stack = LocalStack(cfg)
    try:
        with console.status("starting engines, router and Prometheus…"):
            stack.start()
        console.print(stack.describe())
        console.print(f"OpenAI endpoint: [bold]{stack.router_url}/v1[/bold]   logs: {stack.log_dir}")
        if stack.prometheus_url:
            console.print(f"Prometheus: [bold]{stack.prometheus_url}[/bold]")
        console.print(f"try: llmd-kserve bench --target {stack.router_url} --rate 5 --num-requests 100")
        console.print("Ctrl-C stops everything.")
        while not (dead := stack.check()):
            time.sleep(0.5)
        console.print(f"[red]exited unexpectedly: {', '.join(dead)}; stopping[/red]")
        return 1
    except KeyboardInterrupt:
        console.print("stopping…")
        return 0
    finally:
        stack.stop()
        signal.signal(signal.SIGTERM, old)
