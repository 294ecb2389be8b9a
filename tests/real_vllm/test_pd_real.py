"""Prefill/decode disaggregation on real vLLM (the CPU build): NixlConnector moves the prompt's KV from a prefill
replica to a decode replica, by hand and through the router (``docs/pd-on-cpu.md``).

Two replicas of a tiny random-weights Llama, one core each: prefill ``kv_producer`` and decode ``kv_consumer``,
``NixlConnector`` over a host buffer, each with its own NIXL side-channel port. The decode replica's
``vllm:prompt_tokens_by_source_total{source="external_kv_transfer"}`` shows the KV came over; its
``source="local_compute"`` shows it did not compute the prompt again. Skipped without a vLLM venv (``LLMD_VLLM_PYTHON``
or ``.venv-vllm`` above the repository) or without ``nixl`` in it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmd_kserve.disagg.protocol import PREFILL_REQUEST_PARAMS
from llmd_kserve.stack.procs import free_port

pytestmark = [pytest.mark.real_vllm, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
STARTUP_S = 900.0
"""A replica starts in 30-120 s on two cores; much longer while other replicas share them."""
KV_CACHE_BYTES = 32 << 20
BLOCK = 32
SOURCE = "vllm:prompt_tokens_by_source_total"

# Flags for the prefill and the decode replica (docs/pd-on-cpu.md): a host buffer, producer and consumer roles.
PREFILL_KV = {"kv_connector": "NixlConnector", "kv_role": "kv_producer", "kv_buffer_device": "cpu"}
DECODE_KV = {"kv_connector": "NixlConnector", "kv_role": "kv_consumer", "kv_buffer_device": "cpu"}

_MODEL_SCRIPT = r'''
import glob, json, os, sys, sysconfig
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))[:200]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.train(files, trainers.BpeTrainer(vocab_size=8192, special_tokens=["<s>", "</s>", "<pad>"],
                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
tok.save(os.path.join(out, "tokenizer.json"))
template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
           "pad_token": "<pad>", "model_max_length": 16384, "chat_template": template},
          open(os.path.join(out, "tokenizer_config.json"), "w"))
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=8192, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16384,
                  bos_token_id=0, eos_token_id=1, pad_token_id=2)
LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)
'''


def _vllm_python() -> Path | None:
    explicit = os.environ.get("LLMD_VLLM_PYTHON")
    if explicit:
        return Path(explicit)
    for parent in ROOT.parents:
        python = parent / ".venv-vllm" / "bin" / "python"
        if python.exists():
            return python
    return None


def _clean_env(**extra: str) -> dict[str, str]:
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return env | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", **extra}


def _tiny_model(python: Path, directory: Path) -> Path:
    try:  # the project's own builder, where it exists
        from llmd_kserve.tiny_model import write_tiny_model  # type: ignore[import-not-found]
    except ImportError:
        subprocess.run([str(python), "-c", _MODEL_SCRIPT, str(directory)], check=True, env=_clean_env(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
        return directory
    return Path(write_tiny_model(directory))


@dataclass
class Proc:
    """A child in its own process group, its output in ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    out: IO[bytes]
    url: str = ""

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.out.close()


def _start(name: str, argv: list[str], env: dict[str, str], logs: Path, url: str) -> Proc:
    log = logs / f"{name}.log"
    out = log.open("wb")
    popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                             cwd=ROOT, start_new_session=True)
    return Proc(name, popen, log, out, url)


def _replica(python: Path, model: Path, name: str, core: int, kv: dict[str, Any], logs: Path) -> Proc:
    """One vLLM OpenAI server with the P/D flags of docs/pd-on-cpu.md."""
    port, side = free_port(), free_port()
    argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
            "--served-model-name", model.name, "--host", "127.0.0.1", "--port", str(port),
            "--block-size", str(BLOCK), "--enforce-eager", "--kv-cache-memory-bytes", str(KV_CACHE_BYTES),
            "--max-model-len", "4096", "--enable-prefix-caching", "--enable-prompt-tokens-details", "--seed", "0",
            "--kv-transfer-config", json.dumps(kv)]
    env = _clean_env(VLLM_CPU_OMP_THREADS_BIND=str(core), VLLM_NIXL_SIDE_CHANNEL_HOST="127.0.0.1",
                     VLLM_NIXL_SIDE_CHANNEL_PORT=str(side))
    return _start(name, argv, env, logs, f"http://127.0.0.1:{port}")


def _wait_healthy(procs: list[Proc], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    waiting = list(procs)
    while waiting:
        for p in list(waiting):
            if p.popen.poll() is not None:
                pytest.fail(f"{p.name} exited {p.popen.returncode} before it was healthy:\n{p.tail()}")
            try:
                with urllib.request.urlopen(p.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        waiting.remove(p)
            except (OSError, urllib.error.URLError):
                pass
        if waiting and time.monotonic() > deadline:
            pytest.fail(f"not healthy after {deadline_s:g} s: {[p.name for p in waiting]}; logs in {procs[0].log.parent}")
        if waiting:
            time.sleep(1.0)


@dataclass
class PDStack:
    model: str
    prefill: Proc
    decode: Proc
    router: Proc
    procs: list[Proc] = field(default_factory=list)


@pytest.fixture(scope="module")
def pd_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PDStack]:
    python = _vllm_python()
    if python is None or not python.exists():
        pytest.skip("real vLLM tier: no vLLM venv (set LLMD_VLLM_PYTHON or make .venv-vllm; docs/pd-on-cpu.md)")
    if subprocess.run([str(python), "-c", "import nixl._api"], env=_clean_env(), capture_output=True).returncode:
        pytest.skip(f"NixlConnector needs nixl in the vLLM venv: {python} -m pip install --no-deps nixl nixl-cu12 "
                    "(docs/pd-on-cpu.md)")
    work = tmp_path_factory.mktemp("pd-real")
    model = _tiny_model(python, work / "tiny-llama")
    logs = work / "logs"
    logs.mkdir()
    procs: list[Proc] = []
    try:
        prefill = _replica(python, model, "prefill", 0, PREFILL_KV, logs)
        procs.append(prefill)
        decode = _replica(python, model, "decode", 1 if (os.cpu_count() or 1) > 1 else 0, DECODE_KV, logs)
        procs.append(decode)
        _wait_healthy([prefill, decode], STARTUP_S)
        port = free_port()
        router = _start("router", [sys.executable, "-m", "llmd_kserve.cli", "router", "--port", str(port),
                                   "--config", "pd-always", "--endpoints",
                                   f"{prefill.url}#role=prefill,{decode.url}#role=decode"],
                        {**os.environ, "PYTHONPATH": str(ROOT)}, logs, f"http://127.0.0.1:{port}")
        procs.append(router)
        _wait_healthy([router], 120.0)
        yield PDStack(model.name, prefill, decode, router, procs)
    finally:
        for p in reversed(procs):
            p.stop()


def post(url: str, body: dict[str, Any], rid: str | None = None) -> tuple[bytes, dict[str, str]]:
    headers = {"Content-Type": "application/json", **({"x-request-id": rid} if rid else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=300) as resp:
        return resp.read(), dict(resp.headers)


def samples(url: str, name: str) -> dict[str, float]:
    """``name``'s samples on ``url``/metrics, keyed by their ``source`` (or ``""``) label."""
    with urllib.request.urlopen(url + "/metrics", timeout=60) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                key = s.labels.get("source") or s.labels.get("reason") or s.labels.get("mode") or ""
                out[key] = out.get(key, 0.0) + s.value
    return out


def sources_moved(decode: str, before: dict[str, float]) -> dict[str, float]:
    after = samples(decode, SOURCE)
    return {k: after[k] - before.get(k, 0.0) for k in after}


def prompt(tag: str) -> str:
    """About 900 tokens, unique per ``tag`` (no prefix shared with another test's prompt)."""
    return f"[{tag}] " + " ".join(f"def function_{i}(value): return value * {i} + {tag!r}" for i in range(60))


def test_handshake_by_hand_moves_the_prompts_kv(pd_stack: PDStack) -> None:
    s = pd_stack
    body = {"model": s.model, "prompt": prompt("by-hand"), "max_tokens": 8, "temperature": 0}
    before = samples(s.decode.url, SOURCE)
    raw, _ = post(s.prefill.url + "/v1/completions",
                  {**body, "max_tokens": 1, "stream": False, "kv_transfer_params": dict(PREFILL_REQUEST_PARAMS)},
                  rid="pd-by-hand")
    answer = json.loads(raw)
    params = answer["kv_transfer_params"]
    n = answer["usage"]["prompt_tokens"]
    assert params["do_remote_prefill"] is True and params["do_remote_decode"] is False
    assert params["remote_host"] == "127.0.0.1" and params["remote_num_tokens"] == n > 8 * BLOCK
    assert params["remote_request_id"].startswith("cmpl-pd-by-hand")  # vLLM derives it from x-request-id

    raw, _ = post(s.decode.url + "/v1/completions", {**body, "kv_transfer_params": params}, rid="pd-by-hand")
    decoded = json.loads(raw)
    moved = sources_moved(s.decode.url, before)
    assert decoded["usage"]["prompt_tokens"] == n and decoded["usage"]["completion_tokens"] == 8
    assert moved["external_kv_transfer"] == n and moved["local_compute"] == 0  # not computed again on decode
    # the KV that came over is the prefill's: same greedy tokens as the prefill replica computing it all itself
    raw, _ = post(s.prefill.url + "/v1/completions", body)
    assert decoded["choices"][0]["text"] == json.loads(raw)["choices"][0]["text"]


def test_through_the_router_the_decode_replica_gets_the_kv(pd_stack: PDStack) -> None:
    s = pd_stack
    before = samples(s.decode.url, SOURCE)
    raw, headers = post(s.router.url + "/v1/completions",
                        {"model": s.model, "prompt": prompt("router"), "max_tokens": 8, "temperature": 0})
    answer = json.loads(raw)
    n = answer["usage"]["prompt_tokens"]
    assert headers["x-llmd-endpoint"] == s.decode.url and answer["usage"]["completion_tokens"] == 8
    moved = sources_moved(s.decode.url, before)
    assert moved["external_kv_transfer"] == n and moved["local_compute"] == 0

    # a streamed chat request takes the same way
    before = samples(s.decode.url, SOURCE)
    raw, headers = post(s.router.url + "/v1/chat/completions",
                        {"model": s.model, "messages": [{"role": "user", "content": prompt("chat")}],
                         "max_tokens": 8, "temperature": 0, "stream": True,
                         "stream_options": {"include_usage": True}})
    events = [json.loads(line[5:]) for line in raw.decode().splitlines()
              if line.startswith("data:") and line != "data: [DONE]"]
    usage = next(e["usage"] for e in reversed(events) if e.get("usage"))
    moved = sources_moved(s.decode.url, before)
    assert headers["x-llmd-endpoint"] == s.decode.url and usage["completion_tokens"] == 8
    assert moved["external_kv_transfer"] == usage["prompt_tokens"] and moved["local_compute"] == 0

    router = s.router.url
    assert samples(router, "llmd_router_pd_requests_total") == {"disaggregated": 2.0, "local": 0.0}
    assert sum(samples(router, "llmd_router_pd_fallbacks_total").values()) == 0
    # the router counts what the prefill engine handed over: here exactly what the decode engine received
    assert samples(router, "llmd_router_pd_kv_transfer_tokens_total")[""] == n + usage["prompt_tokens"]
