"""The front end in front of one simulated engine core: when a request sent at ``now`` reaches the scheduler.

    fe = Frontend(profile)
    fe.ready_at(now, prompt_tokens) -> float    # the time it can be added to the engine core
    await driver.frontend_wait(fe, prompt_tokens, time_scale)   # the same on the HTTP engine's event loop

vLLM's OpenAI server is one process: its event loop runs ``AsyncLLM.add_request`` (``InputProcessor.process_inputs``:
validation, request building) for one request at a time, and the engine core's input thread
(``EngineCoreProc.process_input_sockets`` -> ``preprocess_add_request``: block hashing) takes them in the order sent.
With ``profile.serial_frontend`` requests pass that front end one after another, each taking
``profile.request_overhead(prompt_tokens)``, so a burst reaches the scheduler spread out (the first alone, the rest
while its step runs); without it each request pays its own overhead independently (all of a burst arrive together).
Whether that front-end work also takes time from the engine (``profile.frontend_on_engine_core``) is the engine
core's business (``EngineCore.add_request``).
"""

from __future__ import annotations

from llmd_kserve.latency import LatencyProfile


class Frontend:
    """One replica's front end (see the module docstring)."""

    def __init__(self, profile: LatencyProfile) -> None:
        self.profile = profile
        self.free_at = float("-inf")

    def ready_at(self, now: float, prompt_tokens: int) -> float:
        """When a request of ``prompt_tokens`` sent at ``now`` is handed to the engine core (call in send order)."""
        work = self.profile.request_overhead(prompt_tokens)
        if not self.profile.serial_frontend:
            return now + work
        self.free_at = max(now, self.free_at) + work
        return self.free_at
