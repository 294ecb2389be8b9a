"""A model's own Hugging Face tokenizer, producing the token ids a vLLM server computes for the same request.

Reads a model directory (or a ``tokenizer.json`` and the files beside it): ``tokenizer.json`` through the
``tokenizers`` package, special tokens and the chat template from ``tokenizer_config.json`` (or
``chat_template.jinja`` / ``chat_template.json``), with no ``transformers`` import. It follows what vLLM does:

- a completion prompt is encoded with the tokenizer's special tokens (its post-processor adds BOS, as ``/tokenize``
  and ``/v1/completions`` do);
- a chat is rendered with the model's Jinja chat template the way ``transformers`` renders it (sandboxed, trimmed
  blocks, ``tojson``, ``raise_exception``, the special tokens as variables, ``add_generation_prompt``), the text
  parts of a message's content joined by newlines, and the text encoded *without* special tokens: a template that
  wants BOS writes ``{{ bos_token }}`` itself (vLLM's ``add_special_tokens`` is false for chat).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from llmd_kserve.errors import ConfigError, InvalidRequestError

log = logging.getLogger(__name__)

_SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


def _token_text(value: Any) -> str | None:
    """A special token as ``tokenizer_config.json`` writes it: a string, or an ``AddedToken`` map with ``content``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path.name}: {exc}", str(path)) from exc
    return data if isinstance(data, dict) else {}


def _pick_template(value: Any) -> str | None:
    """``chat_template`` as a string, or the ``default`` of a list of ``{name, template}`` (the first otherwise)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, Mapping)}
        chosen = named.get("default", next(iter(named.values()), None))
        return chosen if isinstance(chosen, str) else None
    return None


def find_chat_template(folder: Path, config: Mapping[str, Any]) -> str | None:
    """The model's chat template: ``chat_template.jinja``, else ``chat_template.json``, else ``tokenizer_config.json``
    (the order ``transformers`` loads them in)."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    from_json = _pick_template(_read_json(folder / "chat_template.json").get("chat_template"))
    if from_json is not None:
        return from_json
    return _pick_template(config.get("chat_template"))


@lru_cache(maxsize=8)
def compile_chat_template(template: str) -> Any:
    """A Jinja template compiled as ``transformers`` compiles chat templates (sandboxed; ``{% generation %}`` kept)."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _Generation(Extension):  # training-time marker of assistant text: renders its body unchanged
        tags = {"generation"}

        def parse(self, parser: Any) -> nodes.Node:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return str(caller())

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def _message_for_template(message: Mapping[str, object]) -> dict[str, object]:
    """A message as vLLM hands it to a string-content template: text parts of a content list joined by newlines."""
    out = dict(message)
    content = out.get("content")
    if isinstance(content, list):
        texts = [str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type", "text") == "text"]
        out["content"] = "\n".join(texts)
    return out


class HFTokenizer:
    """``HFTokenizer(path)``: ``path`` a model directory or its ``tokenizer.json`` (extra ``hf``: ``tokenizers``,
    ``jinja2``); ``default_chat_template`` renders chats when the model has no template. ``encode`` adds the special tokens by default (a completion prompt); ``apply_chat_template``
    renders a chat to text, which is then encoded with ``add_special_tokens=False``."""

    def __init__(self, path: str | Path, default_chat_template: str | None = None) -> None:
        from tokenizers import Tokenizer as _HF  # optional dependency

        given = Path(path)
        folder = given if given.is_dir() else given.parent
        file = folder / "tokenizer.json" if given.is_dir() else given
        if not file.is_file():
            raise ConfigError(f"no tokenizer.json in {given}", "tokenizer")
        self._tok = _HF.from_file(str(file))
        self.vocab_size = self._tok.get_vocab_size()
        config = _read_json(folder / "tokenizer_config.json")
        specials = {**_read_json(folder / "special_tokens_map.json"), **config}
        self.special_tokens: dict[str, str] = {}
        for name in _SPECIAL_NAMES:
            text = _token_text(specials.get(name))
            if text is not None:
                self.special_tokens[name] = text
        eos = self.special_tokens.get("eos_token")
        self.eos_token_id = self._tok.token_to_id(eos) if eos is not None else None
        self.chat_template = find_chat_template(folder, config)
        self.path = folder
        template = self.chat_template or default_chat_template
        if self.chat_template is None:
            log.warning("the tokenizer in %s has no chat template (tokenizer_config.json 'chat_template' or "
                        "chat_template.jinja): chats are keyed with %s, which the engine does not use (vLLM refuses "
                        "chats without a template)", folder, "a generic one" if template else "none (a 400)")
        try:
            self._template = compile_chat_template(template) if template is not None else None
        except Exception as exc:  # jinja2.TemplateSyntaxError: the model's files are broken
            raise ConfigError(f"cannot compile the chat template of {folder}: {exc}", "tokenizer") from exc

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids)))

    def apply_chat_template(self, messages: Sequence[Mapping[str, object]], add_generation_prompt: bool = True,
                            **variables: object) -> str:
        """The chat as text, rendered with the model's template (``variables``: e.g. ``tools``, or a request's
        ``chat_template_kwargs``); a chat the template rejects (``raise_exception``) is a 400."""
        import jinja2

        if self._template is None:
            raise InvalidRequestError(f"the model's tokenizer ({self.path}) has no chat template", param="messages")
        try:
            return str(self._template.render(messages=[_message_for_template(m) for m in messages],
                                             add_generation_prompt=add_generation_prompt,
                                             **{**self.special_tokens, **variables}))
        except (jinja2.TemplateError, TypeError, ValueError) as exc:
            raise InvalidRequestError(f"the model's chat template rejects these messages: {exc}",
                                      param="messages") from exc
