"""``llmd-kserve keys add|list|revoke`` and ``llmd-kserve audit verify`` (exit codes, nothing secret listed)."""

from __future__ import annotations

import json

from llmd_kserve.cli import main
from llmd_kserve.governance.audit import AuditLog


def test_keys_add_list_revoke(tmp_path, capsys):
    f = str(tmp_path / "keys.yaml")
    assert main(["keys", "add", "--file", f, "--tenant", "acme", "--model", "m", "--rpm", "5", "--priority", "3"]) == 0
    plaintext = capsys.readouterr().out.strip()
    assert plaintext.startswith("sk-llmd-")
    assert main(["keys", "list", "--file", f]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["tenant"] == "acme" and listed["models"] == ["m"] and "hash" not in listed
    assert plaintext not in (tmp_path / "keys.yaml").read_text()
    assert main(["keys", "revoke", "--file", f, listed["id"]]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": listed["id"], "revoked": True}
    assert main(["keys", "revoke", "--file", f, "nope"]) == 2
    assert "no key with id" in capsys.readouterr().err


def test_keys_add_admin_and_one_line_errors(tmp_path, capsys):
    f = str(tmp_path / "keys.yaml")
    assert main(["keys", "add", "--file", f, "--tenant", "ops", "--admin"]) == 0
    assert json.loads(capsys.readouterr().err.strip().splitlines()[-1])["admin"] is True
    assert main(["keys", "add", "--file", f, "--tenant", "acme"]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--file", f]) == 0
    assert [json.loads(x)["admin"] for x in capsys.readouterr().out.splitlines()] == [True, False]
    (tmp_path / "keys.yaml").write_bytes(b"")
    for cmd in (["keys", "list", "--file", f], ["keys", "add", "--file", f], ["keys", "revoke", "--file", f, "x"],
                ["keys", "list", "--file", str(tmp_path / "missing.yaml")]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert err.startswith("llmd-kserve keys: error:") and len(err.strip().splitlines()) == 1
        assert "empty" in err or "does not exist" in err


def test_audit_verify_exit_codes(tmp_path, capsys):
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    for i in range(3):
        log.append({"event": "done", "request_id": str(i)})
    log.close()
    assert main(["audit", "verify", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["records"] == 3
    assert main(["audit", "verify", str(path), "--expect-head", "0" * 64]) == 1
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[2])
    assert main(["audit", "verify", str(path)]) == 1
    assert main(["audit", "verify", str(tmp_path / "missing.jsonl")]) == 2
