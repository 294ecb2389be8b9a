"""OpenAI/vLLM request validation and response bodies of the simulated engine (field names as vLLM 0.26 writes them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from llmd_kserve.errors import InvalidRequestError, NotFound
from llmd_kserve.tokenizer import Tokenizer, render_chat

SYSTEM_FINGERPRINT = "vllm-0.26.0-llmdsim"
_json = msgspec.json.Encoder()
json_bytes = _json.encode


NotFoundError = NotFound
"""vLLM answers an unknown model with 404 ``NotFoundError`` (same body shape as 400s)."""


@dataclass(frozen=True, slots=True)
class GenRequest:
    """A validated ``/v1/completions`` or ``/v1/chat/completions`` request."""

    kind: Literal["completion", "chat"]
    model: str
    prompts: list[list[int]]
    max_tokens: int
    output_len: int | None
    """Simulated EOS position (finish reason ``stop``); None: generate ``max_tokens``."""
    stream: bool
    include_usage: bool
    stop: tuple[str, ...]
    kv_transfer_params: dict | None
    body: Mapping[str, Any]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _opt(body: Mapping[str, Any], key: str, types: tuple[type, ...], what: str) -> Any:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
        raise InvalidRequestError(f"'{key}' must be {what}, got {type(v).__name__}", param=key)
    return v


def _token_list(v: list, vocab: int, param: str) -> list[int]:
    for t in v:
        if not _is_int(t):
            raise InvalidRequestError(f"'{param}' token ids must be integers", param=param)
        if not 0 <= t < vocab:
            raise InvalidRequestError(f"Token id {t} is out of vocabulary", param=param)
    return list(v)


def parse_prompts(prompt: Any, tok: Tokenizer, vocab: int) -> list[list[int]]:
    """text | token ids | list of texts | list of token-id lists -> one token list per prompt."""
    if isinstance(prompt, str):
        return [tok.encode(prompt)]
    if isinstance(prompt, list) and prompt:
        if all(_is_int(t) for t in prompt):
            return [_token_list(prompt, vocab, "prompt")]
        if all(isinstance(p, str) for p in prompt):
            return [tok.encode(p) for p in prompt]
        if all(isinstance(p, list) and p for p in prompt):
            return [_token_list(p, vocab, "prompt") for p in prompt]
    raise InvalidRequestError(
        "'prompt' must be a string, a list of token ids, or a list of strings or token-id lists (non-empty)",
        param="prompt",
    )


def chat_prompt(body: Mapping[str, Any], tok: Tokenizer) -> list[int]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise InvalidRequestError("'messages' must be a non-empty list", param="messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidRequestError(f"messages[{i}] must be an object with a string 'role'", param="messages")
        content = m.get("content")
        if not isinstance(content, str | list | None):
            raise InvalidRequestError(f"messages[{i}].content must be a string or a list", param="messages")
        if isinstance(content, list) and not all(isinstance(p, dict) for p in content):
            raise InvalidRequestError(f"messages[{i}].content parts must be objects", param="messages")
    return tok.encode(render_chat(msgs, bool(body.get("add_generation_prompt", True))))


def parse_generate(body: Any, kind: Literal["completion", "chat"], *, model: str, tok: Tokenizer,
                   max_model_len: int, vocab: int = 32000, default_output_len: int = 128) -> GenRequest:
    """Validate a generation request like vLLM does; raises InvalidRequestError (400) or NotFoundError (404)."""
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    name = _opt(body, "model", (str,), "a string")
    if name is not None and name != model:
        raise NotFoundError(f"The model `{name}` does not exist.", param="model")
    prompts = parse_prompts(body.get("prompt"), tok, vocab) if kind == "completion" else [chat_prompt(body, tok)]
    mt = body.get("max_completion_tokens") if kind == "chat" and body.get("max_completion_tokens") is not None \
        else body.get("max_tokens")
    param = "max_completion_tokens" if kind == "chat" and body.get("max_completion_tokens") is not None \
        else "max_tokens"
    if mt is not None and not _is_int(mt):
        raise InvalidRequestError(f"{param} must be an integer, got {type(mt).__name__}.", param=param)
    if mt is not None and mt < 1:
        raise InvalidRequestError(f"{param} must be at least 1, got {mt}.", param=param)
    if mt is not None and mt > max_model_len:
        raise InvalidRequestError(
            f"{param}={mt} cannot be greater than max_model_len=max_total_tokens={max_model_len}. "
            f"Please request fewer output tokens. (parameter={param}, value={mt})", param=param)
    n = _opt(body, "n", (int,), "an integer")
    if n is not None and n != 1:
        raise InvalidRequestError("the simulated engine supports n=1 only", param="n")
    for key in ("top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"):
        _opt(body, key, (int, float), "a number")
    for key in ("logprobs", "top_logprobs", "prompt_logprobs", "echo"):
        if body.get(key) not in (None, False):
            raise InvalidRequestError(f"'{key}' is not supported by the simulated engine", param=key)
    temp = _opt(body, "temperature", (int, float), "a number")
    if temp is not None and temp < 0:
        raise InvalidRequestError(f"temperature must be non-negative, got {temp}.", param="temperature")
    stream = bool(_opt(body, "stream", (bool,), "a boolean"))
    opts = _opt(body, "stream_options", (dict,), "an object")
    if opts is not None and not stream:
        raise InvalidRequestError("Stream options can only be defined when `stream=True`.", param="stream_options")
    ignore_eos = bool(_opt(body, "ignore_eos", (bool,), "a boolean"))
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = (stop,)
    elif stop is None:
        stop = ()
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stop = tuple(s for s in stop if s)
    else:
        raise InvalidRequestError("'stop' must be a string or a list of strings", param="stop")
    kvtp = _opt(body, "kv_transfer_params", (dict,), "an object")
    longest = max(len(p) for p in prompts)
    if longest >= max_model_len:
        raise InvalidRequestError(
            f"This model's maximum context length is {max_model_len} tokens. However, your request has {longest} "
            f"input tokens. Please reduce the length of the input messages. (parameter=input_tokens, value={longest})",
            param="input_tokens")
    output_len = None
    if mt is None:  # vLLM: completions default 16, chat "the rest of the context"; the simulated model stops earlier
        mt = 16 if kind == "completion" else max_model_len - longest
        if not ignore_eos and mt > default_output_len:
            output_len = default_output_len
    elif longest + mt > max_model_len:
        raise InvalidRequestError(
            f"'{param}' is too large: {mt}. This model's maximum context length is {max_model_len} tokens and your "
            f"request has {longest} input tokens ({mt} > {max_model_len} - {longest}). "
            f"(parameter={param}, value={mt})", param=param)
    return GenRequest(kind, model, prompts, mt, output_len, stream,
                      bool(opts and opts.get("include_usage")), stop, kvtp, body)


# --- bodies -----------------------------------------------------------------------------------------------------
def usage(prompt: int, completion: int, cached: int | None) -> dict:
    return {"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion,
            "prompt_tokens_details": None if cached is None else {"cached_tokens": cached}}


def completion_body(rid: str, created: int, model: str, choices: Sequence[tuple[str, str, str | None]],
                    use: dict, kvtp: dict | None) -> dict:
    """``choices``: (text, finish_reason, stop_reason) per prompt."""
    return {
        "id": rid, "object": "text_completion", "created": created, "model": model,
        "choices": [{"index": i, "text": t, "logprobs": None, "finish_reason": f, "stop_reason": s, "token_ids": None,
                     "prompt_logprobs": None, "prompt_token_ids": None, "routed_experts": None}
                    for i, (t, f, s) in enumerate(choices)],
        "service_tier": None, "system_fingerprint": SYSTEM_FINGERPRINT, "usage": use,
        "kv_transfer_params": kvtp, "ec_transfer_params": None, "metrics": None,
    }


def chat_body(rid: str, created: int, model: str, text: str, finish: str, stop_reason: str | None, use: dict,
              kvtp: dict | None) -> dict:
    return {
        "id": rid, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                              "annotations": None, "audio": None, "function_call": None,
                                              "reasoning": None},
                     "logprobs": None, "finish_reason": finish, "stop_reason": stop_reason, "token_ids": None,
                     "routed_experts": None}],
        "service_tier": None, "system_fingerprint": SYSTEM_FINGERPRINT, "usage": use, "prompt_logprobs": None,
        "prompt_token_ids": None, "prompt_text": None, "kv_transfer_params": kvtp, "ec_transfer_params": None,
        "metrics": None,
    }


class ChunkWriter:
    """Pre-encoded SSE chunks of one streamed response (only the text and finish reason vary per token)."""

    def __init__(self, kind: Literal["completion", "chat"], rid: str, created: int, model: str) -> None:
        self.kind = kind
        obj = "text_completion" if kind == "completion" else "chat.completion.chunk"
        self.head = (b'data: {"id":' + json_bytes(rid) + b',"object":"' + obj.encode() + b'","created":'
                     + str(created).encode() + b',"model":' + json_bytes(model) + b',"choices":')
        self.rid, self.created, self.model = rid, created, model

    def token(self, index: int, text: str, finish: str | None = None, stop_reason: str | None = None) -> bytes:
        f = b"null" if finish is None else json_bytes(finish)
        sr = b"null" if stop_reason is None else json_bytes(stop_reason)
        if self.kind == "completion":
            return (self.head + b'[{"index":' + str(index).encode() + b',"text":' + json_bytes(text)
                    + b',"logprobs":null,"finish_reason":' + f + b',"stop_reason":' + sr
                    + b',"prompt_token_ids":null,"token_ids":null}]}\n\n')
        return (self.head + b'[{"index":0,"delta":{"content":' + json_bytes(text) + b'},"logprobs":null,'
                b'"finish_reason":' + f + b',"stop_reason":' + sr + b',"token_ids":null}]}\n\n')

    def role(self) -> bytes:
        return (self.head + b'[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,'
                b'"finish_reason":null}]}\n\n')

    def usage(self, use: dict) -> bytes:
        body = {"id": self.rid, "object": "text_completion" if self.kind == "completion" else "chat.completion.chunk",
                "created": self.created, "model": self.model, "choices": [], "usage": use,
                "system_fingerprint": SYSTEM_FINGERPRINT}
        return b"data: " + json_bytes(body) + b"\n\n"

    DONE = b"data: [DONE]\n\n"


def render_body(req: GenRequest, rid: str, prompt: list[int]) -> dict:
    """One entry of ``/v1/completions/render`` (a list) or the body of ``/v1/chat/completions/render``."""
    b = req.body
    sp: dict[str, Any] = {
        "presence_penalty": float(b.get("presence_penalty") or 0.0),
        "frequency_penalty": float(b.get("frequency_penalty") or 0.0),
        "repetition_penalty": float(b.get("repetition_penalty") or 1.0),
        "temperature": float(b["temperature"]) if b.get("temperature") is not None else 1.0,
        "top_p": float(b.get("top_p") or 1.0), "min_p": float(b.get("min_p") or 0.0),
        "stop": list(req.stop), "stop_token_ids": [],
    }
    if b.get("max_tokens") is not None or b.get("max_completion_tokens") is not None or req.kind == "chat":
        sp["max_tokens"] = req.max_tokens
    sp.update({"output_kind": 2, "skip_clone": True, "bad_words": [], "skip_reading_prefix_cache": False})
    return {"request_id": rid, "token_ids": prompt, "assistant_tokens_mask": None, "token_offsets": None,
            "features": None, "sampling_params": sp, "model": req.model, "stream": req.stream,
            "stream_options": b.get("stream_options"), "cache_salt": None, "priority": 0,
            "kv_transfer_params": req.kv_transfer_params, "ec_transfer_params": None}
