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


# vLLM 0.32's NixlConnector answer on CPU, as measured (docs/pd-on-cpu.md): more keys than 0.26, blocks per group.
NIXL_032 = {"do_remote_prefill": True, "do_remote_decode": False, "remote_block_ids": [[1, 2, 3]],
            "remote_engine_id": "b129", "remote_request_id": "cmpl-hs-a-0-bebe2cd9", "remote_host": "127.0.0.1",
            "remote_port": 18410, "tp_size": 1, "dcp_size": 1, "pp_size": 1, "remote_num_tokens": 937,
            "remote_blocks_expiry_time": None, "transfer_mode": "pull", "remote_prefill_cached_tokens": 0}


def test_a_vllm_032_nixl_answer_is_forwarded_whole_and_its_token_count_read():
    raw = msgspec.json.encode({"kv_transfer_params": NIXL_032, "usage": {"prompt_tokens": 940}})
    ans = parse_prefill_answer(raw)
    assert ans.params == NIXL_032 and decode_body({"prompt": "p"}, ans.params)["kv_transfer_params"] == NIXL_032
    assert ans.transferred_tokens == 937  # remote_num_tokens wins over usage
    assert parse_prefill_answer(msgspec.json.encode({"kv_transfer_params": ANSWER, "usage": {"prompt_tokens": 50}})
                                ).transferred_tokens == 50
    assert parse_prefill_answer(msgspec.json.encode({"kv_transfer_params": ANSWER})).transferred_tokens is None


@pytest.mark.parametrize("raw", [b'{"choices": [], "usage": {"prompt_tokens": 300}}',
                                 b'{"kv_transfer_params": null, "usage": {"prompt_tokens": 300}}'])
def test_a_storage_connector_answer_without_params_is_accepted_when_no_handle_is_required(raw):
    ans = parse_prefill_answer(raw, handle_required=False)
    assert ans.params is None and ans.prompt_tokens == 300 and ans.transferred_tokens == 300
    assert decode_body(CLIENT, ans.params) == strip_client_params(CLIENT)  # the original request, no params
    with pytest.raises(PrefillAnswerError):
        parse_prefill_answer(raw)


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"kv_transfer_params": {"do_remote_prefill": false}}',
                                 b'{"kv_transfer_params": "x"}'])
def test_a_bad_answer_is_an_error_even_when_no_handle_is_required(raw):
    with pytest.raises(PrefillAnswerError):
        parse_prefill_answer(raw, handle_required=False)
