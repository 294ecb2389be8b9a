"""``llmd-kserve up``: start the local stack, print its URLs, and keep it up until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import time

from llmd_kserve.stack.local import LocalStack, StackConfig


def run_up(cfg: StackConfig) -> int:
    """Start the stack, print its URLs and wait until Ctrl-C or SIGTERM; exit 1 if a component dies."""
    from rich.console import Console

    console = Console()

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
