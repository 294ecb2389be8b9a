"""The front end of a CPU replica (``engine_sim.frontend``, ``EngineCore`` with ``frontend_on_engine_core``), each
test naming the vLLM 0.32.0 code or deployment fact it mirrors.

vLLM's OpenAI server is one process: its event loop runs ``AsyncLLM.add_request`` ->
``InputProcessor.process_inputs`` for one request at a time (``vllm/v1/engine/async_llm.py``), and the engine core's
input thread (``EngineCoreProc.process_input_sockets`` -> ``preprocess_add_request``: block hashing,
``vllm/v1/engine/core.py``) takes them in order. On a CPU replica pinned to one core (``llmd-kserve up --engine vllm``:
``VLLM_CPU_OMP_THREADS_BIND`` for the worker, the API server and engine core on the same core) that work runs on the
core the forward passes need.
"""

from __future__ import annotations

import asyncio
import random

from llmd_kserve.engine_sim.calibrate import DATA_DIR, replay
from llmd_kserve.engine_sim.core import EngineCore
from llmd_kserve.engine_sim.frontend import Frontend
from llmd_kserve.latency import load_profile

CPU = load_profile("cpu-tiny-llama")
PARALLEL = CPU.model_copy(update={"serial_frontend": False, "frontend_on_engine_core": False})


def prompt(n: int, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(10, 8000) for _ in range(n)]


def test_the_cpu_profile_models_its_front_end() -> None:
    assert CPU.serial_frontend and CPU.frontend_on_engine_core
    h100 = load_profile("h100-llama8b")
    assert not h100.serial_frontend and not h100.frontend_on_engine_core


def test_a_burst_passes_the_api_server_one_request_at_a_time() -> None:
    """``AsyncLLM.add_request`` -> ``InputProcessor.process_inputs`` on the server's one event loop: four requests
    sent together reach the scheduler one ``request_overhead`` apart; with a parallel front end all at once."""
    work = CPU.request_overhead(512)
    serial = Frontend(CPU)
    ready = [serial.ready_at(0.0, 512) for _ in range(4)]
    assert ready == [work * k for k in (1, 2, 3, 4)]
    parallel = Frontend(PARALLEL)
    assert [parallel.ready_at(0.0, 512) for _ in range(4)] == [PARALLEL.request_overhead(512)] * 4
    # a request sent after the front end went idle pays only its own work
    assert serial.ready_at(10.0, 512) == 10.0 + work


def test_front_end_work_during_a_step_lengthens_the_next_step() -> None:
    """The API server and ``EngineCoreProc.preprocess_add_request`` run on the replica's one core: a request handed
    over while the engine steps took its ``request_overhead`` from the engine; one handed to an idle engine did not."""
    def second_step(profile, add_during_first: bool) -> tuple[float, float]:
        core = EngineCore(profile)
        core.add_request("a", prompt(600, 1), 4)  # engine idle: no charge
        first = core.step(0.0)
        if add_during_first:
            core.add_request("b", prompt(300, 2), 4)
        out = core.step(first.duration)
        return first.duration, out.duration

    first_shared, with_b = second_step(CPU, True)
    first_parallel, with_b_parallel = second_step(PARALLEL, True)
    assert first_shared == first_parallel  # the first request met an idle engine
    charged = with_b - with_b_parallel
    assert abs(charged - CPU.request_overhead(300)) < 1e-12
    # the same second step without a new request: nothing to charge
    _, alone = second_step(CPU, False)
    _, alone_parallel = second_step(PARALLEL, False)
    assert alone == alone_parallel


def test_burst_ttft_in_the_calibration_needs_the_serial_front_end() -> None:
    """The measured calibration set (``decode C=…``: C prompts of 512 tokens sent at once) is matched only when
    requests reach the scheduler one after another: with a parallel front end the simulated median TTFT of a burst
    of 8 or 16 is far below the real one."""
    data = DATA_DIR / "cpu-tiny-llama"

    def burst_errors(profile) -> dict[str, float]:
        return {p.scenario: p.error for p in replay(profile, data) if p.metric == "ttft_med"
                and p.scenario in ("decode C=8", "decode C=16")}

    serial, parallel = burst_errors(CPU), burst_errors(PARALLEL)
    assert all(abs(e) < 0.25 for e in serial.values()), serial
    assert all(e < -0.25 for e in parallel.values()), parallel


def test_the_http_engine_serialises_its_front_end(monkeypatch) -> None:
    """The HTTP engine waits on the same front end: three requests handed in at once are told to sleep one, two and
    three overheads (on the engine's clock, times ``time_scale``); the sleeps are recorded, not timed."""
    import llmd_kserve.engine_sim.driver as driver

    asked: list[float] = []

    async def record(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr(driver.asyncio, "sleep", record)

    async def go() -> None:
        fe = Frontend(CPU)
        loop = asyncio.get_running_loop()
        monkeypatch.setattr(loop, "time", lambda: 100.0)  # the three arrive at the same instant
        await asyncio.gather(*(driver.frontend_wait(fe, 512, 0.5) for _ in range(3)))

    asyncio.run(go())
    work = CPU.request_overhead(512) * 0.5
    assert [round(a / work, 9) for a in sorted(asked)] == [1.0, 2.0, 3.0]
