"""FAULTS-2026-12 M6-M9, the audit trail. M6/M7: a disk-full episode (``RLIMIT_FSIZE`` on a real router) leaves a
whole chain with a ``write_failed`` record, every answer has its record, in both fsync modes, and the failure
counter and head metric tell the truth. M8: verify catches left-out oldest files and a re-hashed edit of a keyed
chain. M9: a last record over 1 MiB (or an unparseable one) does not stop a restart."""

from __future__ import annotations

import json
import logging
import resource

import pytest

from llmd_kserve.cli import main
from llmd_kserve.governance.audit import AuditLog, record_hash, rotated_files, verify
from llmd_kserve.stack.procs import free_port
from tests.faults.procs import engine, metric, request, router, running, wait_for

pytestmark = pytest.mark.slow  # real processes and sockets: the full suite runs them, the fast loop does not

KEY = b"k" * 32
UNLIMITED = resource.RLIM_INFINITY


def _records(path):
    return [json.loads(x) for f in rotated_files(path) for x in f.read_bytes().splitlines()]


def _ask(url: str, rid: str, prompt: str = "audit me") -> int:
    body = {"model": "llama-8b-shape", "prompt": prompt * 4, "max_tokens": 4, "ignore_eos": True}
    return request(url + "/v1/completions", body, {"x-request-id": rid})[0]


def _disk_full_episode(tmp_path, fsync: str, headroom: int) -> tuple[dict[str, int], str, str, list[dict]]:
    """Requests before, during and after an RLIMIT_FSIZE 'disk full' on the router: (statuses, metrics during,
    metrics after, records)."""
    audit, guard = tmp_path / "audit.jsonl", tmp_path / "guard.yaml"
    guard.write_text("guardrails:\n- {type: blocklist, keywords: [secret-project]}\n")
    eng = engine(tmp_path, "e0")
    with running(eng):
        r = router(tmp_path, eng.url, "--audit-file", str(audit), "--audit-fsync", fsync, "--audit-fsync-interval",
                   "0.2", "--guardrails-file", str(guard))
        with running(r):
            statuses = {f"before-{i}": _ask(r.url, f"before-{i}") for i in range(3)}
            assert wait_for(lambda: len(_records(audit)) == 6)  # admit + done each
            resource.prlimit(r.pid, resource.RLIMIT_FSIZE, (audit.stat().st_size + headroom, UNLIMITED))
            statuses |= {f"full-{i}": _ask(r.url, f"full-{i}") for i in range(6)}
            statuses["blocked"] = _ask(r.url, "blocked", "secret-project")  # refused anyway: keeps its own status
            during = request(r.url + "/metrics")[1].decode()
            resource.prlimit(r.pid, resource.RLIMIT_FSIZE, (UNLIMITED, UNLIMITED))
            statuses |= {f"after-{i}": _ask(r.url, f"after-{i}") for i in range(3)}
            assert wait_for(lambda: metric(request(r.url + "/metrics")[1].decode(), "llmd_gateway_audit_head_seq")
                            == _records(audit)[-1]["seq"])  # the anchor names the last record in the file
            after = request(r.url + "/metrics")[1].decode()
    return statuses, during, after, _records(audit)


def _check_whole(tmp_path, statuses: dict[str, int], recs: list[dict]) -> dict:
    rep = verify(rotated_files(tmp_path / "audit.jsonl"))
    assert rep.ok, rep.errors
    failed = [x for x in recs if x["event"] == "write_failed"]
    assert len(failed) == 1 and failed[0]["error"].startswith("EFBIG") and any("could not write" in n for n in rep.notes)
    admitted = {x["client_request_id"] for x in recs if x["event"] == "admit"}  # the router's id is its own
    assert all(rid in admitted for rid, s in statuses.items() if s == 200)  # no answer without its record
    assert all(s == 200 for rid, s in statuses.items() if rid.startswith(("before", "after")))
    assert statuses["blocked"] == 400
    return failed[0]


def test_disk_full_with_fsync_every_leaves_a_whole_chain_and_a_write_failed_record(tmp_path):
    statuses, during, after, recs = _disk_full_episode(tmp_path, "every", 1500)
    full = [s for rid, s in statuses.items() if rid.startswith("full")]
    assert 503 in full and set(full) <= {200, 503}  # fail closed once the disk is full
    failed = _check_whole(tmp_path, statuses, recs)
    assert failed["lost_records"] >= full.count(503)  # each refused request's admit record, at least
    assert metric(during, "llmd_gateway_audit_write_failures_total") >= 1
    assert metric(during, "llmd_gateway_audit_write_failing") == 1 and metric(after, "llmd_gateway_audit_write_failing") == 0


def test_disk_full_with_fsync_interval_refuses_requests_and_counts_failures(tmp_path):
    statuses, during, after, recs = _disk_full_episode(tmp_path, "interval", 0)
    assert [s for rid, s in statuses.items() if rid.startswith("full")] == [503] * 6  # no answer without a record
    _check_whole(tmp_path, statuses, recs)
    assert metric(during, "llmd_gateway_audit_write_failures_total") >= 6
    assert metric(during, "llmd_gateway_audit_write_failing") == 1
    assert metric(during, "llmd_gateway_audit_head_seq") == 6  # not past the records in the file
    assert metric(after, "llmd_gateway_audit_write_failing") == 0


def test_router_keys_the_chain_with_its_key_file(tmp_path, capsys):
    audit, key_file = tmp_path / "audit.jsonl", tmp_path / "chain.key"
    key_file.write_bytes(KEY + b"\n")
    eng = engine(tmp_path, "e0")
    with running(eng):
        r = router(tmp_path, eng.url, "--audit-file", str(audit), "--audit-chain-key-file", str(key_file))
        with running(r):
            assert _ask(r.url, "keyed") == 200
    assert {x.get("chain") for x in _records(audit)} == {"hmac-sha256"}
    assert verify([audit], key=KEY).ok and not verify([audit]).ok  # keyed: the key is needed
    assert f"head {verify([audit], key=KEY).head}" in r.output()  # the anchor, logged at WARNING at exit
    short = tmp_path / "short.key"
    short.write_bytes(b"abc")
    assert main(["router", "--endpoints", eng.url, "--audit-file", str(audit), "--audit-chain-key-file",
                 str(short)]) == 2
    assert "at least 16 bytes" in capsys.readouterr().err


def _rechain(files, drop_seq: int, key: bytes | None = None) -> None:
    """The attacker of faults-2026-12/rechain.py: drop one record, renumber and re-hash everything after it."""
    prev, newseq = None, None
    for f in files:
        out = []
        for line in f.read_bytes().splitlines():
            r = json.loads(line)
            if r["seq"] == drop_seq:
                newseq = r["seq"]
                continue
            if newseq is not None:
                r["seq"], r["prev"], newseq = newseq, prev, newseq + 1
                r["hash"] = record_hash(r, key)
            prev = r["hash"]
            out.append(json.dumps(r, sort_keys=True, separators=(",", ":")).encode() + b"\n")
        f.write_bytes(b"".join(out))


def _rotated_log(tmp_path, key: bytes | None, n: int = 20):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=800, **({"chain_key": key} if key else {}))
    for i in range(n):
        log.append({"event": "admit", "request_id": f"r{i}"})
    log.close()
    files = rotated_files(path)
    assert len(files) >= 4 and (verify(files, key=key) if key else verify(files)).ok
    return files


def test_verify_refuses_left_out_oldest_files_unless_partial(tmp_path, capsys):
    files = _rotated_log(tmp_path, None)
    rep = verify(files[3:])
    assert not rep.ok and "files before it are missing" in rep.errors[0]
    assert verify(files[3:], partial=True).ok
    assert main(["audit", "verify", *map(str, files[3:])]) == 1
    assert main(["audit", "verify", "--partial", *map(str, files[3:])]) == 0
    assert "partial" in json.loads(capsys.readouterr().out.split("\n}\n")[-2] + "\n}")["notes"][0]


def test_keyed_chain_catches_a_rehashed_drop_and_a_downgrade(tmp_path, monkeypatch, capsys):
    files = _rotated_log(tmp_path, KEY)
    attacked = tmp_path / "attacked"
    attacked.mkdir()
    copies = []
    for f in files:
        copies.append(attacked / f.name)
        copies[-1].write_bytes(f.read_bytes())
    _rechain(copies, 7)  # re-hashed without the key (the repro)
    assert not verify(copies, key=KEY).ok
    assert not verify(copies).ok  # keyed records and no key: not "ok"
    for c, f in zip(copies, files, strict=True):
        c.write_bytes(f.read_bytes())
    _rechain(copies, 7, key=b"another key of 16+ bytes")
    assert any("another chain key" in e for e in verify(copies, key=KEY).errors)
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    assert main(["audit", "verify", "--chain-key-file", str(key_file), *map(str, files)]) == 0
    assert main(["audit", "verify", "--chain-key-file", str(key_file), *map(str, copies)]) == 1
    monkeypatch.setenv("LLMD_AUDIT_CHAIN_KEY", KEY.decode())
    assert main(["audit", "verify", *map(str, files)]) == 0
    monkeypatch.setenv("LLMD_AUDIT_CHAIN_KEY", "short")
    capsys.readouterr()
    assert main(["audit", "verify", *map(str, files)]) == 2
    assert "at least 16 bytes" in capsys.readouterr().err


def test_a_log_keyed_after_an_upgrade_verifies_and_protects_its_unkeyed_start(tmp_path):
    path = tmp_path / "audit.jsonl"
    old = AuditLog(path)
    for i in range(3):
        old.append({"event": "admit", "request_id": f"old{i}"})
    old.close()
    new = AuditLog(path, chain_key=KEY)  # the router restarted with a chain key
    new.append({"event": "admit", "request_id": "new"})
    new.close()
    assert verify([path], key=KEY).ok and not verify([path]).ok
    _rechain([path], 2)  # rewrite the unkeyed start: the first keyed record's prev no longer matches
    assert not verify([path], key=KEY).ok
    plain = tmp_path / "plain.jsonl"
    AuditLog(plain).close()
    log = AuditLog(plain)
    log.append({"event": "admit"})
    log.close()
    assert any("no record is keyed" in e for e in verify([plain], key=KEY).errors)  # an unkeyed rewrite of it all


def test_head_is_logged_at_warning_on_rotation_and_a_kept_head_catches_a_cut_end(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="llmd_kserve.governance.audit"):
        files = _rotated_log(tmp_path, None)
    heads = [r.getMessage().rsplit(" ", 1)[1] for r in caplog.records
             if r.levelno == logging.WARNING and " head " in r.getMessage()]
    assert len(heads) == len(files) and heads[-1] == verify(files).head  # one per rotation, one at close
    kept = verify(files, expect_head=heads[1])  # a head kept at an earlier rotation: still there
    assert kept.ok and "records follow it" in kept.notes[-1]
    assert not verify(files[:1], expect_head=heads[1]).ok  # the files after it were deleted


def test_a_last_record_over_1_mib_does_not_stop_a_restart(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append({"event": "admit", "request_id": "small"})
    log.append({"event": "admit", "request_id": "big", "prompt": "n" * 1_500_000})
    log.close()
    r = router(tmp_path, f"http://127.0.0.1:{free_port()}", "--audit-file", str(path))  # it exited: JSONDecodeError
    r.stop()
    log = AuditLog(path)
    assert log.seq == 2
    log.append({"event": "admit", "request_id": "after"})
    log.close()
    assert verify([path]).ok and [x["seq"] for x in _records(path)] == [1, 2, 3]


def test_an_unparseable_last_line_is_cut_and_recorded_and_a_foreign_file_is_left_alone(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append({"event": "admit", "request_id": "a"})
    log.close()
    with open(path, "ab") as f:
        f.write(b"x" * 2_000_000 + b"\n" + b'{"seq": 3, "torn')
    log = AuditLog(path)
    log.close()
    recs = _records(path)
    assert [x["event"] for x in recs] == ["admit", "recovered"] and recs[1]["truncated_bytes"] == 2_000_017
    assert recs[1]["reason"] == "unparseable last record" and verify([path]).ok
    foreign = tmp_path / "notes.txt"
    foreign.write_bytes(b"my notes\nmore notes\n")
    with pytest.raises(OSError, match="does not end with an audit record"):
        AuditLog(foreign)
    assert foreign.read_bytes() == b"my notes\nmore notes\n"
