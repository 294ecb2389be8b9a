"""Real vLLM OpenAI servers as local-stack engines: one replica's command line, environment, KV-cache size, and
a one-line cause when it fails to start.

    VllmReplica(model, port, kv_port, replay_port, ...)   .argv(python) .env(base) .url .endpoint_spec
    ModelInfo.load(model_dir)                             the config fields that size the KV cache
    check_memory(replicas, kv_bytes)                      LlmdError when this machine cannot hold them
    startup_failure(log_text) -> str                      the root cause in a vLLM start-up log, one line

Each replica runs vLLM's OpenAI server (``python -m vllm.entrypoints.openai.api_server``, which also runs from a
CPU build that registers no ``vllm`` distribution) with prefix caching, ZMQ KV events and a replay endpoint,
``--enable-prompt-tokens-details``, ``--enable-scale-out`` (the render endpoints) and ``VLLM_SERVER_DEV_MODE=1``
(``/reset_prefix_cache``); on CPU also ``--block-size 32`` (the CPU attention backend's multiple),
``--enforce-eager`` (no compilation at start) and one core per replica (``VLLM_CPU_OMP_THREADS_BIND``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmd_kserve.errors import ConfigError, LlmdError

CPU_BLOCK_SIZE = 32
"""vLLM's CPU attention backend takes block sizes that are multiples of 32 only."""
DEFAULT_KV_CACHE_TOKENS = 16384
"""KV cache per replica, in tokens (32 MiB for the tiny model): small enough to put the cache under pressure."""
STARTUP_TIMEOUT_S = 600.0
"""Seconds a replica may take to answer /health (about 30-60 s on two busy cores)."""
REPLICA_OVERHEAD_BYTES = 3 << 29
"""Memory of one CPU replica besides its KV cache (API server + engine core, measured 1.1-1.5 GiB)."""
PD_CONNECTOR = "NixlConnector"
_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "float8": 1, "fp8": 1}
_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
_DROP_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND")
"""Not passed on: another venv's paths, and vLLM settings that would override the replica's own."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the launcher needs from a model directory's ``config.json``."""

    path: Path
    name: str
    max_positions: int
    kv_bytes_per_token: int

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelInfo:
        """ConfigError (naming the directory) when it is not a Hugging Face model directory."""
        path = Path(model_dir).expanduser().absolute()
        try:
            cfg = json.loads((path / "config.json").read_text())
        except FileNotFoundError:
            raise ConfigError(f"not a model directory (no config.json): {path}", "model") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path / 'config.json'}: {exc}", "model") from exc
        text = cfg.get("text_config") or cfg  # multimodal configs nest the language model's
        try:
            layers = int(text["num_hidden_layers"])
            heads = int(text["num_attention_heads"])
            kv_heads = int(text.get("num_key_value_heads") or heads)
            head_dim = int(text.get("head_dim") or int(text["hidden_size"]) // heads)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"config.json lacks the attention shape ({exc}): {path}", "model") from exc
        dtype = str(text.get("torch_dtype") or text.get("dtype") or cfg.get("torch_dtype") or "bfloat16")
        per_token = 2 * layers * kv_heads * head_dim * _DTYPE_BYTES.get(dtype.removeprefix("torch."), 2)  # K and V
        return cls(path, path.name, int(text.get("max_position_embeddings") or 4096), per_token)


@dataclass(frozen=True, slots=True)
class VllmReplica:
    """One vLLM server of the local stack and the flags it runs with."""

    model: ModelInfo
    port: int
    kv_port: int
    replay_port: int
    host: str = "127.0.0.1"
    role: str = "both"
    kv_cache_tokens: int = DEFAULT_KV_CACHE_TOKENS
    cpu: bool = True
    core: int | None = None
    seed: int = 0
    connector: str = PD_CONNECTOR
    side_channel_port: int | None = None
    """P/D replicas: the NIXL handshake port (each replica on a host needs its own; vLLM's default is 5600)."""
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    @property
    def kv_endpoint(self) -> str:
        """Where routers subscribe to this replica's KV events. vLLM binds its PUB socket only to a wildcard
        (``tcp://*:port``) or an ``ipc://`` address and *connects* to any other (then nothing reaches a router), so a
        replica on a loopback host publishes on an abstract ipc socket (this machine only, as loopback is) and any
        other binds ``tcp://*:kv_port``, which routers dial at the replica's host."""
        if _is_loopback(self.host):
            return f"ipc://@llmd-kv-{self.port}-{self.kv_port}"
        return f"tcp://{_url_host(self.host)}:{self.kv_port}"

    @property
    def kv_publish_endpoint(self) -> str:
        """The address vLLM is told to publish on (a form it binds, see :attr:`kv_endpoint`)."""
        endpoint = self.kv_endpoint
        return endpoint if endpoint.startswith("ipc://") else f"tcp://*:{self.kv_port}"

    @property
    def replay_endpoint(self) -> str:
        return f"tcp://{_url_host(self.host)}:{self.replay_port}"

    @property
    def endpoint_spec(self) -> str:
        """The router's endpoint spec: the URL with its role and KV-event addresses (``#role=…&kv=…&replay=…``)."""
        frag = (f"role={self.role}&" if self.role != "both" else "") + f"kv={self.kv_endpoint}&replay={self.replay_endpoint}"
        return f"{self.url}#{frag}"

    @property
    def kv_cache_bytes(self) -> int:
        return self.kv_cache_tokens * self.model.kv_bytes_per_token

    @property
    def max_model_len(self) -> int:
        """The model's context, capped so one whole sequence fits the cache (vLLM keeps one block back)."""
        block = CPU_BLOCK_SIZE if self.cpu else 16
        fits = self.kv_cache_tokens - block
        if fits < block:
            raise ConfigError(f"must be at least {2 * block} tokens, got {self.kv_cache_tokens}", "kv-cache-tokens")
        return min(self.model.max_positions, fits)

    def kv_events_config(self) -> dict[str, object]:
        return {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": self.kv_publish_endpoint,
                "replay_endpoint": self.replay_endpoint, "topic": f"kv@{self.host}:{self.port}@{self.model.name}"}

    def argv(self, python: str | Path) -> list[str]:
        argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model.path),
                "--served-model-name", self.model.name, "--host", self.host, "--port", str(self.port),
                "--enable-prefix-caching", "--kv-events-config", json.dumps(self.kv_events_config()),
                "--enable-prompt-tokens-details", "--enable-scale-out",
                "--kv-cache-memory-bytes", str(self.kv_cache_bytes), "--max-model-len", str(self.max_model_len),
                "--seed", str(self.seed)]
        if self.cpu:
            argv += ["--block-size", str(CPU_BLOCK_SIZE), "--enforce-eager"]
        if self.role != "both":
            argv += ["--kv-transfer-config", json.dumps({"kv_connector": self.connector, "kv_role": "kv_both"})]
        return argv + list(self.extra_args)

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` (the caller's environment) offline, in dev mode, pinned to this replica's core."""
        env = {k: v for k, v in base.items() if k not in _DROP_ENV}
        env |= _OFFLINE | {"VLLM_SERVER_DEV_MODE": "1"}
        if self.cpu and self.core is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = str(self.core)
        if self.role != "both" and self.side_channel_port is not None:
            env |= {"VLLM_NIXL_SIDE_CHANNEL_HOST": self.host, "VLLM_NIXL_SIDE_CHANNEL_PORT": str(self.side_channel_port)}
        return env


def replica_cores(n: int, cores: Sequence[int] | None = None) -> list[int]:
    """A core for each of ``n`` replicas: one each while cores last, then shared round-robin."""
    available = sorted(cores if cores is not None else os.sched_getaffinity(0))
    return [available[i % len(available)] for i in range(n)]


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(replicas: int, kv_cache_bytes: int, available: int | None = None) -> None:
    """LlmdError when ``replicas`` CPU replicas with this KV cache each would not fit in the available memory."""
    available = available_memory() if available is None else available
    need = replicas * (REPLICA_OVERHEAD_BYTES + kv_cache_bytes)
    if available is not None and need > available:
        raise LlmdError(f"not enough memory for {replicas} vLLM replica(s): about {need / 2**30:.1f} GiB needed, "
                        f"{available / 2**30:.1f} GiB available (fewer --engines or a smaller --kv-cache-tokens)")


_PROC = re.compile(r"^\(\w+ pid=\d+\)\s?")
_RECORD = re.compile(r"^[A-Z]+ \d\d-\d\d [\d:]+ \[[^\]]+\]\s?")
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)|\w+Error)(: .*)?$")
_NOT_MESSAGE = ("Traceback", "File ", "During handling", "The above exception", " ")
_GENERIC = ("Engine core initialization failed", "Engine process failed to start", "died unexpectedly")


def startup_failure(log_text: str) -> str:
    """The root cause in a vLLM start-up log, as one line: the first exception the engine core or the API server
    raised (not the generic "initialization failed" that follows it), its message's later lines joined; else the
    last line."""
    parsed: list[tuple[str, str]] = []  # (log record prefix, text) per line: a message goes on while the prefix stays the same
    for raw in log_text.splitlines():
        body = _PROC.sub("", raw)
        m = _RECORD.match(body)
        parsed.append((m.group(0) if m else "", body[m.end():] if m else body))
    found = [i for i, (_, text) in enumerate(parsed) if _EXCEPTION.match(text)]
    specific = [i for i in found if not any(g in parsed[i][1] for g in _GENERIC)]
    if not found:
        lines = [text.strip() for _, text in parsed if text.strip()]
        return (lines or ["(no output)"])[-1][:400]
    first = (specific or found)[0 if specific else -1]
    prefix, reason = parsed[first]
    for record, text in parsed[first + 1:first + 6]:
        if record != prefix or not text.strip() or text.startswith(_NOT_MESSAGE) or _EXCEPTION.match(text):
            break
        reason += " " + text.strip()
    if not specific and any("died unexpectedly" in text or "exit code: -9" in text for _, text in parsed):
        reason += " (a process was killed: out of memory?)"
    return " ".join(reason.split())[:400]


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
