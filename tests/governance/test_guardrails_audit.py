"""Guardrails (blocklist, PII redaction, fail-closed) and the hash-chained audit log (verify, rotation, recovery)."""

from __future__ import annotations

import json
import re

import pytest

from llmd_kserve.errors import ConfigError, HTTPError
from llmd_kserve.governance.audit import AuditLog, rotated_files, verify
from llmd_kserve.governance.guardrails import Blocked, Blocklist, Guardrails, PIIRedactor, build_guardrails
from llmd_kserve.governance.keys import VirtualKey
from tests.governance.test_keys import Clock


def test_blocklist_keyword_and_regex_and_response_flag():
    g = build_guardrails({"guardrails": [{"type": "blocklist", "keywords": ["Project-X"],
                                          "patterns": [r"\bDROP\s+TABLE\b"]}, {"type": "pii-redaction"}]})
    g.pre_request("a harmless prompt")
    for bad in ("tell me about project-x", "please DROP  TABLE users"):
        with pytest.raises(Blocked) as exc:
            g.pre_request(bad)
        assert exc.value.status == 400 and "project" not in exc.value.message.lower()
    assert not g.on_response("the answer mentions PROJECT-X").allow
    red = g.redact("mail bob@example.com or call +1 415-555-0100, card 4111 1111 1111 1111, ssn 123-45-6789")
    assert "bob@" not in red and "555" not in red and "4111" not in red and "6789" not in red
    assert "[EMAIL]" in red and "[SSN]" in red


class Broken:
    name = "broken"

    def __init__(self, fail_open: bool) -> None:
        self.fail_open = fail_open

    def pre_request(self, text):
        raise RuntimeError("hook down")

    def on_response(self, text):
        raise RuntimeError("hook down")

    def redact(self, text):
        raise RuntimeError("hook down")


def test_failing_hook_is_fail_closed_unless_configured_open():
    with pytest.raises(HTTPError) as exc:
        Guardrails([Broken(False)]).pre_request("x")
    assert exc.value.status == 503
    assert Guardrails([Broken(False)]).redact("secret") == "[REDACTION FAILED]"
    Guardrails([Broken(True), Blocklist(("zzz",))]).pre_request("x")  # fail-open: skipped
    assert Guardrails([Broken(True), PIIRedactor()]).redact("a@b.io") == "[EMAIL]"


@pytest.mark.parametrize("doc, where", [
    ({"guardrails": [{"type": "nope"}]}, "guardrails[0].type"),
    ({"guardrails": [{"type": "blocklist", "patterns": ["("]}]}, "guardrails[0].patterns[0]"),
    ({"guardrails": [{"type": "blocklist", "keywords": "x"}]}, "guardrails[0].keywords"),
    ({"guardrails": [{"type": "pii-redaction", "failOpen": "yes"}]}, "guardrails[0].failOpen"),
])
def test_bad_guardrail_config_names_the_field(doc, where):
    with pytest.raises(ConfigError, match=re.escape(where)):
        build_guardrails(doc)


def _lines(path):
    return path.read_bytes().splitlines(keepends=True)


def test_chain_verifies_and_detects_edit_drop_reorder(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, clock=Clock())
    for i in range(5):
        log.append({"event": "done", "request_id": f"r{i}", "status": 200})
    log.close()
    rep = verify([path])
    assert rep.ok and rep.records == 5 and (rep.first_seq, rep.last_seq) == (1, 5)
    lines = _lines(path)
    edited = tmp_path / "edited.jsonl"
    edited.write_bytes(b"".join(lines[:2] + [lines[2].replace(b'"status":200', b'"status":500')] + lines[3:]))
    assert any("hash mismatch" in e for e in verify([edited]).errors)
    dropped = tmp_path / "dropped.jsonl"
    dropped.write_bytes(b"".join(lines[:2] + lines[3:]))
    assert any("dropped or reordered" in e for e in verify([dropped]).errors)
    swapped = tmp_path / "swapped.jsonl"
    swapped.write_bytes(b"".join([lines[0], lines[2], lines[1], *lines[3:]]))
    assert not verify([swapped]).ok
    first = tmp_path / "first.jsonl"
    first.write_bytes(b"".join(lines[1:]))
    assert any("dropped at the start" in e for e in verify([first]).errors)


def test_rotation_keeps_the_chain_and_restart_continues_it(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=600, clock=Clock())
    for i in range(12):
        log.append({"event": "done", "request_id": f"r{i}"})
    log.close()
    files = rotated_files(path)
    assert len(files) >= 3 and files[-1] == path
    rep = verify(files)
    assert rep.ok and rep.first_seq == 1 and rep.records == 12 + len(files) - 1  # + one "rotated" per new file
    assert json.loads(_lines(files[1])[0])["event"] == "rotated"
    assert not verify(files[:1] + files[2:]).ok  # a whole rotated file missing
    assert not verify(files[1:]).ok  # the oldest files left out: an error ...
    assert verify(files[1:], partial=True).ok and verify(files[1:], partial=True).notes  # ... unless meant, said so
    log2 = AuditLog(path, max_bytes=600, clock=Clock())  # a restart continues the chain
    log2.append({"event": "admit", "request_id": "after-restart"})
    log2.close()
    assert verify(rotated_files(path)).ok


def test_torn_last_line_is_cut_and_recorded(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append({"event": "admit", "request_id": "a"})
    log.close()
    with open(path, "ab") as f:
        f.write(b'{"event":"admit","seq":2,"trunc')
    log = AuditLog(path)
    log.append({"event": "admit", "request_id": "b"})
    log.close()
    recs = [json.loads(x) for x in _lines(path)]
    assert [r["event"] for r in recs] == ["admit", "recovered", "admit"] and recs[1]["truncated_bytes"] == 31
    assert verify([path]).ok


def test_key_public_view_hides_hash():
    assert "hash" not in VirtualKey("k", salt="ab", hash="cd").public()
