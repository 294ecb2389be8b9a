"""`llmd-kserve up --engine vllm`: real vLLM replicas behind the router serve completions and chats, run with the
flags the router relies on, speak the tiny model's tokenizer, and a failed start is one line naming its cause."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.real_vllm.conftest import ROOT, RealStack, cli, cli_env, get, post

pytestmark = [pytest.mark.real_vllm, pytest.mark.timeout(900)]


def test_router_serves_a_completion_and_a_chat(vllm_up: RealStack) -> None:
    models = json.loads(get(f"{vllm_up.router_url}/v1/models"))
    assert [m["id"] for m in models["data"]] == ["tiny-llama"]
    out, headers = post(f"{vllm_up.router_url}/v1/completions",
                        {"model": "tiny-llama", "prompt": "The quick brown fox", "max_tokens": 4, "ignore_eos": True})
    assert out["usage"]["completion_tokens"] == 4 and out["choices"][0]["text"]
    assert headers["x-llmd-endpoint"].rstrip("/") in vllm_up.engine_urls
    chat, headers = post(f"{vllm_up.router_url}/v1/chat/completions",
                         {"model": "tiny-llama", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 3,
                          "ignore_eos": True})
    assert chat["choices"][0]["message"]["role"] == "assistant" and chat["usage"]["completion_tokens"] == 3
    assert headers["x-llmd-endpoint"].rstrip("/") in vllm_up.engine_urls


def test_router_streams_a_chat(vllm_up: RealStack) -> None:
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    req = urllib.request.Request(f"{vllm_up.router_url}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        events = [ln[6:] for ln in resp.read().decode().splitlines() if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] == 3


def test_engines_run_with_the_flags_the_router_needs(vllm_up: RealStack) -> None:
    for base, spec in zip(vllm_up.engine_urls, vllm_up.endpoints, strict=True):
        info = next(ln for ln in get(f"{base}/metrics").splitlines() if ln.startswith("vllm:cache_config_info{"))
        labels = dict(re.findall(r'(\w+)="([^"]*)"', info))
        assert (labels["block_size"], labels["enable_prefix_caching"]) == ("32", "True")
        assert labels["kv_cache_size_tokens"] == "16384"  # --kv-cache-tokens' default, 2 KiB a token
        sources = json.loads(get(f"{base}/kv_event_sources"))["0"]
        frag = dict(kv.split("=", 1) for kv in spec.split("#", 1)[1].split("&"))
        assert (sources["endpoint"], sources["replay_endpoint"]) == (frag["kv"], frag["replay"])
        reset = urllib.request.Request(f"{base}/reset_prefix_cache", data=b"", method="POST")
        with urllib.request.urlopen(reset, timeout=30) as resp:  # VLLM_SERVER_DEV_MODE=1
            assert resp.status == 200
        rendered, _ = post(f"{base}/v1/completions/render", {"model": "tiny-llama", "prompt": "Hi"})  # scale-out
        assert rendered[0]["token_ids"][0] == 1


def test_repeated_prompt_reports_cached_tokens(vllm_up: RealStack) -> None:
    base = vllm_up.engine_urls[0]
    prompt = " ".join(f"word{i}" for i in range(120))
    body = {"model": "tiny-llama", "prompt": prompt, "max_tokens": 1}
    first, _ = post(f"{base}/v1/completions", body)
    second, _ = post(f"{base}/v1/completions", body)
    assert first["usage"]["prompt_tokens"] > 64
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached > 0 and cached % 32 == 0 and cached <= second["usage"]["prompt_tokens"]


def test_engine_tokenizer_is_the_tiny_models(vllm_up: RealStack) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(vllm_up.model_dir / "tokenizer.json"))
    base = vllm_up.engine_urls[1]
    text = "Round trip: def f(x): return x ** 2"
    ids, _ = post(f"{base}/tokenize", {"model": "tiny-llama", "prompt": text})
    assert ids["tokens"] == tok.encode(text).ids and ids["tokens"][0] == 1
    back, _ = post(f"{base}/detokenize", {"model": "tiny-llama", "tokens": ids["tokens"][1:]})
    assert back["prompt"] == text
    chat, _ = post(f"{base}/v1/chat/completions/render",
                   {"model": "tiny-llama", "messages": [{"role": "user", "content": "Hi"}]})
    assert chat["token_ids"] == tok.encode("<s><|user|>\nHi</s>\n<|assistant|>\n", add_special_tokens=False).ids


def test_a_failed_start_is_one_line_naming_the_cause(vllm_python: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "no-tokenizer"
    broken.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, broken / name)
    run = subprocess.run(cli("up", "--engine", "vllm", "--engines", "1", "--port", "0", "--no-prometheus",
                             "--model", str(broken), "--vllm-python", str(vllm_python)),
                         capture_output=True, text=True, timeout=600, cwd=ROOT, env=cli_env())
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("llmd-kserve up: error: vllm-0-both exited with code 1 during startup: ")
    assert "tokenizer" in run.stderr.split("during startup: ", 1)[1]
