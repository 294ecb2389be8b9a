"""The P/D wire protocol: both hops' bodies field for field, the prefill answer, client params stripped."""

from __future__ import annotations

import msgspec
import pytest

from llmd_kserve.disagg.protocol import (
    PREFILL_REQUEST_PARAMS,
    PrefillAnswerError,
    decode_body,
    has_client_params,
    parse_prefill_answer,
    prefill_body,
    strip_client_params,
)

CLIENT = {"model": "m", "prompt": "hello", "max_tokens": 200, "stream": True,
          "stream_options": {"include_usage": True}, "temperature": 0.5,
          "kv_transfer_params": {"do_remote_prefill": True, "remote_host": "evil", "remote_port": 1}}
ANSWER = {"do_remote_prefill": True, "do_remote_decode": False, "remote_block_ids": [3, 4, 5],
          "remote_engine_id": "e-1", "remote_request_id": "r-1-0-1", "remote_host": "10.0.0.9",
          "remote_port": 8000, "tp_size": 1}


def test_prefill_body_is_vllms_proxy_request():
    body = prefill_body(CLIENT)
    assert body == {"model": "m", "prompt": "hello", "max_tokens": 1, "stream": False, "temperature": 0.5,
                    "kv_transfer_params": {"do_remote_decode": True, "do_remote_prefill": False,
                                           "remote_engine_id": None, "remote_block_ids": None,
                                           "remote_host": None, "remote_port": None}}
    assert "stream_options" not in body
    assert body["kv_transfer_params"] == dict(PREFILL_REQUEST_PARAMS)
    assert prefill_body({**CLIENT, "max_completion_tokens": 50})["max_completion_tokens"] == 1
    assert "max_completion_tokens" not in body


def test_decode_body_is_the_original_with_the_answer_verbatim():
    body = decode_body(CLIENT, ANSWER)
    assert body["kv_transfer_params"] is ANSWER
    assert {k: v for k, v in body.items() if k != "kv_transfer_params"} == strip_client_params(CLIENT)
    assert body["stream"] is True and body["max_tokens"] == 200 and body["stream_options"] == {"include_usage": True}


def test_client_params_are_stripped():
    assert "kv_transfer_params" not in strip_client_params(CLIENT)
    assert has_client_params(CLIENT)
    assert not has_client_params({"prompt": "x"})
    escaped = msgspec.json.decode(b'{"prompt": "x", "kv_transfer_param\\u0073": {"remote_port": 1}}')
    assert has_client_params(escaped) and "kv_transfer_params" not in strip_client_params(escaped)


def test_parse_prefill_answer_keeps_params_verbatim():
    raw = msgspec.json.encode({"id": "cmpl-1", "choices": [], "kv_transfer_params": {**ANSWER, "extra": 7},
                               "usage": {"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 32}}})
    ans = parse_prefill_answer(raw)
    assert ans.params == {**ANSWER, "extra": 7} and list(ans.params) == [*ANSWER, "extra"]
    assert (ans.prompt_tokens, ans.cached_tokens) == (100, 32)


@pytest.mark.parametrize("raw", [b"not json", b'{"choices": []}', b'{"kv_transfer_params": null}',
                                 b'{"kv_transfer_params": {"do_remote_prefill": false}}',
                                 b'{"kv_transfer_params": {"do_remote_prefill": true}}'])
def test_answer_without_a_kv_handle_is_an_error(raw):
    with pytest.raises(PrefillAnswerError):
        parse_prefill_answer(raw)
