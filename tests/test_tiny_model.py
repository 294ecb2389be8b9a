"""The tiny random-weights Llama: its shape, its determinism, its tokenizer (BOS, EOS, pad, chat template), its cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tokenizers", reason="needs the 'hf' extra")
pytest.importorskip("safetensors", reason="needs the 'hf' extra")

from safetensors.numpy import load_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from llmd_kserve.stack.vllm import ModelInfo  # noqa: E402
from llmd_kserve.tiny_model import CHAT_TEMPLATE, ensure_tiny_model, write_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", seed=0)


def test_llama_shape_and_weights(model: Path) -> None:
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
            cfg["intermediate_size"], cfg["vocab_size"], cfg["max_position_embeddings"]) == (256, 4, 4, 2, 512, 8192,
                                                                                           16384)
    weights = load_file(str(model / "model.safetensors"))
    assert weights["model.embed_tokens.weight"].shape == (8192, 256)
    assert weights["model.layers.3.self_attn.k_proj.weight"].shape == (128, 256)  # 2 KV heads of 64
    assert weights["model.layers.0.mlp.down_proj.weight"].shape == (256, 512)
    assert 6.5e6 < sum(w.size for w in weights.values()) < 6.7e6
    assert len(weights) == 2 + 4 * 9 + 1
    info = ModelInfo.load(model)
    assert (info.name, info.max_positions, info.kv_bytes_per_token) == ("tiny-llama", 16384, 2048)


def test_same_seed_same_files_other_seed_other_weights(model: Path, tmp_path: Path) -> None:
    again = write_tiny_model(tmp_path / "again", seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "tokenizer_config.json"):
        assert (again / name).read_bytes() == (model / name).read_bytes(), name
    other = write_tiny_model(tmp_path / "other", seed=1)
    assert (other / "model.safetensors").read_bytes() != (model / "model.safetensors").read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (model / "tokenizer.json").read_bytes()


def test_tokenizer_adds_bos_and_round_trips(model: Path) -> None:
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    text = "Hello world: def f(x):\n    return x ** 2  # naïve, ünïcödé ✓"
    enc = tok.encode(text)
    assert enc.ids[0] == 1 and enc.ids.count(1) == 1  # BOS from the post-processor, once
    assert tok.decode(enc.ids, skip_special_tokens=True) == text
    assert tok.encode(text, add_special_tokens=False).ids == enc.ids[1:]
    english = "The return statement leaves the current function call with the expression list as return value."
    assert len(tok.encode(english).ids) < len(english) / 3  # trained merges, not bytes
    assert [tok.token_to_id(t) for t in ("<pad>", "<s>", "</s>")] == [0, 1, 2]
    assert tok.get_vocab_size() == 8192


def test_tokenizer_config_and_chat_template(model: Path) -> None:
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    assert (cfg["bos_token"], cfg["eos_token"], cfg["pad_token"]) == ("<s>", "</s>", "<pad>")
    assert cfg["chat_template"] == CHAT_TEMPLATE
    gen = json.loads((model / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"]) == (1, 2)
    jinja2 = pytest.importorskip("jinja2")
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    out = jinja2.Template(cfg["chat_template"]).render(messages=messages, add_generation_prompt=True,
                                                        bos_token="<s>", eos_token="</s>")
    assert out == "<s><|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n"
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    ids = tok.encode(out, add_special_tokens=False).ids
    assert ids[:2] == [1, tok.token_to_id("<|system|>")] and ids[-2] == tok.token_to_id("<|assistant|>")


def test_ensure_builds_once_and_rebuilds_a_broken_copy(tmp_path: Path) -> None:
    first = ensure_tiny_model(tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model(tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # not written again
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-llama"]  # no temporary directory left behind
    (first / "llmd-tiny-model.json").unlink()  # an interrupted or older copy
    assert ensure_tiny_model(tmp_path) == first
    assert (first / "llmd-tiny-model.json").exists()


def test_unwritable_directory_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(Exception, match="cannot create model directory") as info:
        write_tiny_model(blocker / "model")
    assert "\n" not in str(info.value)


def test_cli_writes_the_same_model(model: Path, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "llmd_kserve.cli", "tiny-model", str(tmp_path / "m"), "--seed", "0"],
                         capture_output=True, text=True, timeout=120, cwd=root, env={"PYTHONPATH": str(root)})
    assert out.returncode == 0 and out.stdout.strip() == str(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
