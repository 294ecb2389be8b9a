"""The P/D wire protocol of vLLM's NixlConnector proxy / llm-d's sidecar: both hops' request bodies, the answer.

The three steps, field for field (``shared/DESIGN.md``, "Protocols to honour exactly")::

    1. router -> prefill   the request with stream: false, max_tokens: 1 (max_completion_tokens: 1 when present),
                           no stream_options, kv_transfer_params: PREFILL_REQUEST_PARAMS
    2. prefill -> router   kv_transfer_params: {do_remote_prefill: true, do_remote_decode: false, remote_block_ids,
                           remote_engine_id, remote_request_id, remote_host, remote_port, tp_size}
    3. router -> decode    the original request with the prefill's kv_transfer_params verbatim, same x-request-id

Connectors that share KV through storage keyed by the prompt (vLLM's ``ExampleConnector``, LMCache with a shared
backend) answer step 2 without ``kv_transfer_params``: the decode engine finds the KV by the prompt itself. With
``handle_required=False`` such an answer parses to ``params=None`` and step 3 is the original request unchanged.

A client never gets to choose where KV comes from: :func:`strip_client_params` drops any ``kv_transfer_params`` a
client put in its body before either hop (the router writes the field itself, from the prefill answer only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import msgspec

KV_TRANSFER_PARAMS = "kv_transfer_params"

PREFILL_REQUEST_PARAMS: Mapping[str, Any] = MappingProxyType({
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
})
"""Step 1's ``kv_transfer_params``, exactly as vLLM's ``toy_proxy_server.py`` sends them."""

REMOTE_PREFILL_KEYS: tuple[str, ...] = ("do_remote_prefill", "do_remote_decode", "remote_block_ids",
                                        "remote_engine_id", "remote_request_id", "remote_host", "remote_port",
                                        "tp_size")
"""Step 2's fields (NixlConnector's ``request_finished``); the router forwards the whole object untouched."""

_decode = msgspec.json.Decoder().decode
encode = msgspec.json.Encoder().encode


class PrefillAnswerError(ValueError):
    """The prefill engine answered 200 without usable ``kv_transfer_params`` (e.g. no KV connector configured)."""


def has_client_params(body: Mapping[str, Any]) -> bool:
    """Whether a *decoded* client body carries ``kv_transfer_params``.

    Decided on the decoded object, never on raw bytes: JSON lets a client escape the key
    (``"kv_transfer_param\\u0073"``), which a byte search misses and the engine decodes (an SSRF).
    """
    return KV_TRANSFER_PARAMS in body


def strip_client_params(body: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``body`` without ``kv_transfer_params``."""
    return {k: v for k, v in body.items() if k != KV_TRANSFER_PARAMS}


def prefill_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """Step 1: the body for the prefill endpoint."""
    out = strip_client_params(body)
    out.pop("stream_options", None)
    out["stream"] = False
    out["max_tokens"] = 1
    if "max_completion_tokens" in out:
        out["max_completion_tokens"] = 1
    out[KV_TRANSFER_PARAMS] = dict(PREFILL_REQUEST_PARAMS)
    return out


def decode_body(body: Mapping[str, Any], params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Step 3: the original request (client ``kv_transfer_params`` dropped) carrying the prefill's ``params``
    (none when the prefill answered without: a storage connector)."""
    out = strip_client_params(body)
    if params is not None:
        out[KV_TRANSFER_PARAMS] = params
    return out


@dataclass(frozen=True, slots=True)
class PrefillAnswer:
    """What the router keeps of a prefill engine's answer."""

    params: dict[str, Any] | None
    """Its ``kv_transfer_params``, as sent (key order and extra keys kept), for step 3; None when it sent none
    and none was required (a storage connector)."""
    prompt_tokens: int = 0
    """The prefill engine's prompt token count (``usage.prompt_tokens``; 0 when it reported none)."""
    cached_tokens: int | None = None
    """Prompt tokens the prefill engine found in its own prefix cache (``usage.prompt_tokens_details``)."""

    @property
    def transferred_tokens(self) -> int | None:
        """Prompt tokens the prefill engine holds for the decode engine: NixlConnector's ``remote_num_tokens``,
        else ``prompt_tokens``; None when the answer says neither."""
        remote = (self.params or {}).get("remote_num_tokens")
        if isinstance(remote, int) and not isinstance(remote, bool) and remote >= 0:
            return remote
        return self.prompt_tokens or None


def parse_prefill_answer(raw: bytes, *, handle_required: bool = True) -> PrefillAnswer:
    """Step 2: a prefill engine's JSON answer; raises :class:`PrefillAnswerError` unless its
    ``kv_transfer_params`` say ``do_remote_prefill: true`` and name the remote request. With
    ``handle_required=False`` an answer without ``kv_transfer_params`` (absent or null) is accepted as well."""
    try:
        answer = _decode(raw)
    except msgspec.DecodeError as exc:
        raise PrefillAnswerError(f"prefill answer is not JSON: {exc}") from None
    if not isinstance(answer, dict):
        raise PrefillAnswerError("prefill answer is not a JSON object")
    params = answer.get(KV_TRANSFER_PARAMS)
    if params is None and not handle_required:
        return _with_usage(None, answer)
    if not isinstance(params, dict):
        raise PrefillAnswerError("prefill answer has no kv_transfer_params (is a KV connector configured?)")
    if params.get("do_remote_prefill") is not True or params.get("remote_request_id") is None:
        raise PrefillAnswerError(f"prefill answer's kv_transfer_params are not a remote-prefill handle: {params}")
    return _with_usage(params, answer)


def _with_usage(params: dict[str, Any] | None, answer: dict[str, Any]) -> PrefillAnswer:
    usage = answer.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    cached = details.get("cached_tokens")
    prompt = usage.get("prompt_tokens")
    return PrefillAnswer(params, prompt if isinstance(prompt, int) else 0, cached if isinstance(cached, int) else None)
