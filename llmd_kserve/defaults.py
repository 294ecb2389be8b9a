"""Named defaults shared by the CLI, the library's option objects, the simulator and the manifests."""

from __future__ import annotations

DEFAULT_PROFILE = "h100-llama8b"
"""Built-in latency profile (H100, vLLM 0.26, Llama-3.1-8B shape): ``llmd_kserve/profiles/<name>.yaml``."""
DEFAULT_MODEL = "llama-8b-shape"
"""Model name a simulated engine serves."""
DEFAULT_CONFIG = "default"
"""Shipped scheduler config the router uses when none is named."""
SCRAPE_INTERVAL_S = 0.05
"""Seconds between two ``/metrics`` polls of one endpoint (and between metrics snapshots in the simulator)."""
ENGINE_PORT = 8000
ROUTER_PORT = 8080
BLOCK_SIZE = 16
"""Tokens per KV block (vLLM's default)."""
STALL_FACTOR = 10.0
"""A request's stall budget in multiples of its predicted time (``control.stalls``; 0: off)."""
STALL_FLOOR_S = 10.0
"""The shortest stall budget, seconds: a loaded engine's slow first token is not a stall."""
MAX_PROMPT_CHARS = 1 << 20
"""Characters of a request's text the router accepts (8 per token of the default 131,072-token limit)."""
SHIPPED_CONFIGS = ("default", "round-robin", "random", "load-only", "approx-prefix", "precise-prefix",
                   "llm-d-optimized-baseline", "sessions")
"""Single-profile scheduler configs in ``llmd_kserve/config/shipped/``, loadable by name."""
PD_SHIPPED_CONFIGS = ("pd-predicted-ttft", "pd-always", "pd-uncached", "pd-never")
"""P/D configs (``pd-profile-handler``, profiles ``decode`` + ``prefill``), loadable by name."""
WORKLOAD_KINDS = ("shared-prefix", "chat", "rag", "reasoning", "trace")
"""The ``kind`` tags of ``bench.workloads.WorkloadSpec`` (a test keeps the two equal)."""
