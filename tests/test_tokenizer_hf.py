"""``--tokenizer <model dir | tokenizer.json>`` gives exactly the ids a real vLLM 0.32 engine computed for the same
requests (``tests/golden/vllm-0.32``): BOS from the post-processor for a completion, the model's own chat template
(which writes BOS itself) for a chat, encoded without adding special tokens."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import pytest

from llmd_kserve.errors import ConfigError, InvalidRequestError
from llmd_kserve.kvcache.hashing import block_keys
from llmd_kserve.plugins.base import CycleState
from llmd_kserve.scheduling.tokenize import TokenizeProducer
from llmd_kserve.tokenizer import load_tokenizer
from llmd_kserve.tokenizer_hf import HFTokenizer
from llmd_kserve.types import LLMRequest
from tests.scheduling.sched_fixtures import endpoint, make_ctx
from tests.wire import golden032_json, tiny_model_tokenizer

REQUESTS = golden032_json("requests.json")
PROMPT = REQUESTS["completion"]["prompt"]
MESSAGES = REQUESTS["chat"]["messages"]
ENGINE_PROMPT_IDS = golden032_json("tokenize.json")["tokens"]
ENGINE_CHAT_IDS = golden032_json("chat_render.json")["token_ids"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_tokenizer(tmp_path_factory.mktemp("tiny"))


def test_the_engine_answers_agree_with_each_other():
    assert golden032_json("completions_render.json")[0]["token_ids"] == ENGINE_PROMPT_IDS
    assert golden032_json("tokenize_chat.json")["tokens"] == ENGINE_CHAT_IDS
    assert ENGINE_PROMPT_IDS[0] == 0 and ENGINE_CHAT_IDS[0] == 0 and ENGINE_CHAT_IDS[1] != 0  # one BOS each


@pytest.mark.parametrize("spec", ["dir", "tokenizer.json"])
def test_a_model_dir_or_its_tokenizer_json_gives_the_engine_ids(model_dir, spec):
    tok = load_tokenizer(str(model_dir if spec == "dir" else model_dir / "tokenizer.json"))
    assert tok.encode(PROMPT) == ENGINE_PROMPT_IDS
    assert tok.encode(tok.apply_chat_template(MESSAGES), add_special_tokens=False) == ENGINE_CHAT_IDS
    assert tok.encode(PROMPT, add_special_tokens=False) == ENGINE_PROMPT_IDS[1:]


def test_the_tokenize_producer_keys_prompts_as_the_engine_does(model_dir):
    ctx = dataclasses.replace(make_ctx(), tokenizer=load_tokenizer(str(model_dir)), block_size=32)
    producer = TokenizeProducer("t", TokenizeProducer.Params(), ctx)
    for _ in range(3):  # fresh, seen once, cached
        for kind, body, want in (("completion", {"prompt": PROMPT}, ENGINE_PROMPT_IDS),
                                 ("chat", {"messages": MESSAGES}, ENGINE_CHAT_IDS)):
            state = CycleState(LLMRequest("r", "tiny", body, kind=kind), [endpoint(0)])
            producer.produce(state)
            assert list(state.token_ids) == want
            assert list(state.block_keys) == block_keys(want, 32)
    state = CycleState(LLMRequest("r", "tiny", {"prompt": PROMPT, "add_special_tokens": False}), [endpoint(0)])
    producer.produce(state)
    assert list(state.token_ids) == ENGINE_PROMPT_IDS[1:]  # the body's add_special_tokens, as vLLM honours it
    odd = {"messages": MESSAGES, "chat_template_kwargs": {"add_generation_prompt": False, "messages": [], "x": 1}}
    state = CycleState(LLMRequest("r", "tiny", odd, kind="chat"), [endpoint(0)])
    producer.produce(state)
    assert list(state.token_ids) == ENGINE_CHAT_IDS  # template variables cannot replace the messages


def _with_template(model_dir: Path, tmp_path: Path, template: str | None, where: str = "config") -> Path:
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template")
    if template is not None and where == "config":
        config["chat_template"] = template
    if template is not None and where == "jinja":
        (folder / "chat_template.jinja").write_text(template)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def test_a_template_without_bos_gives_a_chat_without_bos(model_dir, tmp_path):
    folder = _with_template(model_dir, tmp_path, "{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}")
    tok = HFTokenizer(folder)
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "hello there"}]), add_special_tokens=False)
    assert ids[0] != 0 and ids == tok.encode("hello there</s>", add_special_tokens=False)


def test_template_features_as_transformers_renders_them(model_dir, tmp_path):
    template = ("{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}"
                "{% generation %}[{{ m['role'] }}]{{ m['content'] }}{% endgeneration %}\n"
                "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}{{ extra | default('') }}"
                "{{ {'k': 'é'} | tojson }}")
    tok = HFTokenizer(_with_template(model_dir, tmp_path, template, where="jinja"))
    parts = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "b"}]
    text = tok.apply_chat_template([{"role": "user", "content": parts}], extra="!")
    assert text == '[user]a\nb[assistant]!{"k": "é"}'  # (transformers' own answer) parts joined by newlines
    assert tok.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=False).startswith("[user]x")
    with pytest.raises(InvalidRequestError, match="no tools here"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}])


def test_no_template_falls_back_with_a_warning_and_a_broken_one_is_a_config_error(model_dir, tmp_path, caplog):
    folder = _with_template(model_dir, tmp_path, None)
    with caplog.at_level(logging.WARNING, "llmd_kserve.tokenizer_hf"):
        tok = load_tokenizer(str(folder))
    assert "no chat template" in caplog.text
    assert tok.apply_chat_template([{"role": "user", "content": "x"}]) == "<|user|>\nx\n<|assistant|>\n"
    with pytest.raises(InvalidRequestError, match="no chat template"):
        HFTokenizer(folder).apply_chat_template([{"role": "user", "content": "x"}])
    with pytest.raises(ConfigError, match="chat template"):
        HFTokenizer(_with_template(model_dir, tmp_path / "b", "{% for %}"))


def test_bad_specs_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no tokenizer at"):
        load_tokenizer(str(tmp_path / "nope"))
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot load tokenizer"):
        load_tokenizer(str(tmp_path))
