"""M5: body limit and no big parse/tokenize on the event loop. M6: prompt tokens (token ids count), batch size and
every string in ``messages`` are limited. L1: deep JSON is a 400. L3/L9: bad ``x-request-id`` is a 400."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from tests.faults.procs import engine, request, router, running

pytestmark = pytest.mark.slow  # real processes and sockets: the full suite runs them, the fast loop does not


def test_body_limit_default_and_big_prompt_off_the_loop(tmp_path):
    eng = engine(tmp_path, "e0")
    with running(eng):
        r = router(tmp_path, eng.url)
        with running(r):
            big = json.dumps({"prompt": "word " * (4 << 20), "max_tokens": 2}).encode()  # 20 MiB > 16 MiB default
            status, body, _ = request(r.url + "/v1/completions", big)
            assert status == 413 and json.loads(body)["error"]["type"] == "RequestTooLargeError"
        r2 = router(tmp_path, eng.url, "--max-body-bytes", str(64 << 20), "--max-prompt-tokens", "1000",
                    "--max-prompt-chars", "0", name="r2")  # no character limit: the token count is what refuses
        with running(r2):
            big = json.dumps({"prompt": "word " * (3 << 20), "max_tokens": 2}).encode()  # 15 MiB, 3M tokens
            done = threading.Event()
            answer: list = []

            def send() -> None:
                answer.append(request(r2.url + "/v1/completions", big, timeout=120))
                done.set()

            t = threading.Thread(target=send)
            t.start()
            pings = 0
            while not done.is_set():  # the router answers /health while it tokenizes the big prompt
                if request(r2.url + "/health", timeout=60)[0] == 200 and not done.is_set():
                    pings += 1
                time.sleep(0.02)
            t.join()
            status, body, _ = answer[0]
            assert status == 413 and "tokens; this gateway allows at most 1000" in json.loads(body)["error"]["message"]
            assert pings >= 3


def test_prompt_token_batch_and_message_limits(tmp_path):
    eng = engine(tmp_path, "e0")
    with running(eng):
        r = router(tmp_path, eng.url, "--max-prompt-chars", "10", "--max-prompt-tokens", "100")
        with running(r):
            url = r.url + "/v1/completions"
            chat = r.url + "/v1/chat/completions"
            cases = [
                (url, {"prompt": [1] * 8000, "max_tokens": 2}),
                (url, {"prompt": [[1, 2, 3]] * 50, "max_tokens": 2}),  # 150 token ids in all
                (url, {"prompt": [[1]] * 20000, "max_tokens": 2}),  # batch over the default 256
                (url, {"prompt": ["hi"] * 6, "max_tokens": 2}),  # 12 chars over 6 prompts
                (chat, {"messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "x" * 100_000}}]}], "max_tokens": 2}),
                (chat, {"messages": [{"role": "user", "content": "hi", "name": "n" * 100_000}], "max_tokens": 2}),
            ]
            for target, body in cases:
                status, raw, _ = request(target, body)
                assert status == 413, (body if len(json.dumps(body)) < 200 else list(body), raw[:200])
                assert json.loads(raw)["error"]["type"] == "RequestTooLargeError"
            assert request(url, {"prompt": [1] * 100, "max_tokens": 2})[0] == 200
            assert request(url, {"prompt": "short", "max_tokens": 2})[0] == 200


def _raw(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def test_deep_json_and_bad_request_ids_are_400(tmp_path):
    eng = engine(tmp_path, "e0")
    with running(eng):
        r = router(tmp_path, eng.url, "--audit", "full")
        with running(r):
            deep = ('{"prompt":"a","x":' + "[" * 1000 + "]" * 1000 + "}").encode()
            for base in (r.url, eng.url):
                status, body, _ = request(base + "/v1/completions", deep)
                assert status == 400 and json.loads(body)["error"]["type"] == "BadRequestError"
            assert "RecursionError" not in r.output() + eng.output()
            body = b'{"prompt":"hi","max_tokens":2}'
            for base in (r.url, eng.url):
                port = int(base.rsplit(":", 1)[1])
                for rid in (b"ab\xe9c", b"x" * 8000):
                    data = _raw(port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                b"x-request-id: " + rid + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                    assert data.startswith(b"HTTP/1.1 400"), data[:300]
                    assert b'"param":"x-request-id"' in data
            assert request(r.url + "/debug/decisions")[0] == 200
            status, _, headers = request(r.url + "/v1/completions", {"prompt": "hi", "max_tokens": 2},
                                         headers={"x-request-id": "my-id-1"})
            assert status == 200 and headers["x-request-id"] == "my-id-1"


def test_http_parser_errors_are_openai_json(tmp_path):
    eng = engine(tmp_path, "e0")
    with running(eng):
        r = router(tmp_path, eng.url)
        with running(r):
            for base in (r.url, eng.url):
                port = int(base.rsplit(":", 1)[1])
                for bad in (b"X-A: a\x00b\r\n", b"X-A: a\r\n b\r\n", b"X-A: a\rb\r\n"):
                    data = _raw(port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + bad + b"\r\n")
                    head, _, body = data.partition(b"\r\n\r\n")
                    assert head.split(b" ")[1] == b"400" and b"application/json" in head, data[:300]
                    err = json.loads(body)["error"]
                    assert err["code"] == 400 and err["type"] == "BadRequestError" and err["message"]
            assert "Traceback" not in r.output() + eng.output()
