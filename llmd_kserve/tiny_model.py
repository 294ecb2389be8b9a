"""A small random-weights Llama written offline: safetensors weights, a locally trained byte-level BPE tokenizer.

    write_tiny_model(directory, seed=0) -> Path      config.json, model.safetensors, tokenizer.json, tokenizer_config.json …
    ensure_tiny_model(cache_dir=None, seed=0) -> Path the same, built once under a cache directory
    TinyModelShape                                   the architecture (hidden 256, 4 layers, vocab 8192 …)

Nothing is downloaded: the weights come from ``numpy``'s seeded generator and the tokenizer is trained with
``tokenizers`` on the help texts that ship with Python (``pydoc_data``), so the same seed gives the same files on the
same Python version. Needs the ``hf`` extra (``tokenizers``, ``safetensors``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmd_kserve.errors import ConfigError, LlmdError

TINY_MODEL_NAME = "tiny-llama"
"""The directory name (and so the served model name) of the cached tiny model."""
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>")
"""Special tokens, ids 0.. in this order: pad, BOS, EOS, then the chat roles."""
PAD, BOS, EOS = SPECIAL_TOKENS[:3]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""Each message as ``<|role|>\\ncontent</s>\\n`` after one BOS; the generation prompt opens the assistant's turn."""
_MARKER = "llmd-tiny-model.json"
_FORMAT = 1  # bump when the files written change, so cached copies are rebuilt


@dataclass(frozen=True, slots=True)
class TinyModelShape:
    """A Llama's shape: 6.6 M parameters by default, 2 KiB of KV cache per token in 16-bit."""

    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 512
    vocab_size: int = 8192
    max_position_embeddings: int = 16384

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def write_tiny_model(directory: str | Path, seed: int = 0, shape: TinyModelShape | None = None) -> Path:
    """Write a random-weights ``LlamaForCausalLM`` and its tokenizer into ``directory`` (created; files replaced)."""
    shape = shape or TinyModelShape()
    if shape.hidden_size % shape.num_attention_heads or shape.num_attention_heads % shape.num_key_value_heads:
        raise ConfigError("hidden_size must divide by the heads and the heads by the KV heads", "shape")
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create model directory: {exc.strerror or exc}", str(out)) from exc
    tokenizer = _train_tokenizer(shape.vocab_size)
    tokenizer.save(str(out / "tokenizer.json"))
    _write_json(out / "config.json", _config(shape))
    _write_json(out / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
        "unk_token": None, "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "model_max_length": shape.max_position_embeddings, "chat_template": CHAT_TEMPLATE})
    _write_json(out / "special_tokens_map.json", {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD})
    _save_safetensors(out / "model.safetensors", _weights(shape, seed))
    _write_json(out / _MARKER, {"format": _FORMAT, "seed": seed, "shape": asdict(shape)})
    return out


def ensure_tiny_model(cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """The tiny model under ``cache_dir`` (default ``~/.cache/llmd-kserve``), written on first use only.

    Built in a temporary sibling directory and renamed into place, so a reader never sees half a model and two
    processes building at once both end up with a complete one."""
    root = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "llmd-kserve"
    target = root / (TINY_MODEL_NAME if seed == 0 else f"{TINY_MODEL_NAME}-seed{seed}")
    if _is_current(target, seed):
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
    except OSError as exc:
        raise ConfigError(f"cannot write the model cache: {exc.strerror or exc}", str(root)) from exc
    try:
        write_tiny_model(tmp, seed)
        if target.exists() and not _is_current(target, seed):
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:  # another process renamed its copy first
            if not _is_current(target, seed):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_current(directory: Path, seed: int) -> bool:
    try:
        marker = json.loads((directory / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(marker.get("format") == _FORMAT and marker.get("seed") == seed)


def _config(shape: TinyModelShape) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": shape.hidden_size, "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_hidden_layers, "num_attention_heads": shape.num_attention_heads,
        "num_key_value_heads": shape.num_key_value_heads, "head_dim": shape.head_dim,
        "vocab_size": shape.vocab_size, "max_position_embeddings": shape.max_position_embeddings,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None, "attention_bias": False,
        "mlp_bias": False, "tie_word_embeddings": False, "initializer_range": 0.02,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "bfloat16", "use_cache": True,
    }


def _weights(shape: TinyModelShape, seed: int) -> dict[str, np.ndarray]:
    """Normal(0, 0.02) matrices and unit norms, in float16 (vLLM casts them to the model's dtype on load)."""
    rng = np.random.default_rng(seed)
    h, kv = shape.hidden_size, shape.num_key_value_heads * shape.head_dim

    def normal(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    ones = np.ones(h, dtype=np.float16)
    weights = {"model.embed_tokens.weight": normal(shape.vocab_size, h)}
    for i in range(shape.num_hidden_layers):
        p = f"model.layers.{i}."
        weights |= {
            p + "self_attn.q_proj.weight": normal(h, h), p + "self_attn.k_proj.weight": normal(kv, h),
            p + "self_attn.v_proj.weight": normal(kv, h), p + "self_attn.o_proj.weight": normal(h, h),
            p + "mlp.gate_proj.weight": normal(shape.intermediate_size, h),
            p + "mlp.up_proj.weight": normal(shape.intermediate_size, h),
            p + "mlp.down_proj.weight": normal(h, shape.intermediate_size),
            p + "input_layernorm.weight": ones, p + "post_attention_layernorm.weight": ones,
        }
    weights["model.norm.weight"] = ones
    weights["lm_head.weight"] = normal(shape.vocab_size, h)
    return weights


def _training_text() -> list[str]:
    """Python's own help texts (``pydoc_data.topics``, about 0.5 MB of English and code), in a fixed order."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def _train_tokenizer(vocab_size: int) -> Any:
    """Byte-level BPE with the special tokens first; BOS added by a post-processor, as Llama tokenizers do."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    except ImportError as exc:
        raise LlmdError("the tiny model needs the 'hf' extra: pip install 'llmd-kserve[hf]'") from exc
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_training_text(), trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]),
    ])
    return tok


def _save_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    try:
        from safetensors.numpy import save_file
    except ImportError as exc:
        raise LlmdError("the tiny model needs the 'hf' extra: pip install 'llmd-kserve[hf]'") from exc
    save_file(tensors, str(path), metadata={"format": "pt"})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
