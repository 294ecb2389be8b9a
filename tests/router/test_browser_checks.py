"""The Host/Origin rules that keep other sites' pages away from operator routes (pure functions)."""

from __future__ import annotations

import pytest

from llmd_kserve.router.browser import browser_refusal, is_local_host, same_origin


@pytest.mark.parametrize("host, listen, ok", [
    ("127.0.0.1:8080", None, True), ("localhost:8080", None, True), ("LOCALHOST", None, True),
    ("app.localhost:1", None, True), ("[::1]:8080", None, True), ("10.1.2.3", None, True),
    ("router.internal:8080", "router.internal", True), ("router.internal:8080", None, False),
    ("attacker-rebind.example:8080", None, False), ("localhost.evil.example", None, False),
    ("", None, False), (None, None, False), ("[bad", None, False),
])
def test_only_ip_addresses_localhost_and_the_listen_name_are_local(host, listen, ok):
    assert is_local_host(host, listen) is ok


@pytest.mark.parametrize("origin, host, ok", [
    ("http://127.0.0.1:8080", "127.0.0.1:8080", True), ("http://LOCALHOST:8080", "localhost:8080", True),
    ("http://[::1]:8080", "[::1]:8080", True), ("https://r.example", "r.example", True),
    ("http://127.0.0.1:8081", "127.0.0.1:8080", False), ("http://localhost:8080", "127.0.0.1:8080", False),
    ("null", "127.0.0.1:8080", False), ("file://", "127.0.0.1:8080", False), ("http://evil.example", None, False),
])
def test_same_origin_means_same_host_and_port(origin, host, ok):
    assert same_origin(origin, host) is ok


def test_refusal_reasons():
    assert browser_refusal({"Host": "127.0.0.1:1"}) is None
    assert "Cross-site" in (browser_refusal({"Host": "127.0.0.1:1", "Origin": "http://evil.example"}) or "")
    assert "Host" in (browser_refusal({"Host": "evil.example"}) or "")
    assert browser_refusal({"Host": "evil.example"}, check_host=False) is None
