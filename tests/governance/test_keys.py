"""Virtual keys: salted hashes at rest, authentication, revocation, reload on change, bad files name the field."""

from __future__ import annotations

import os

import pytest

from llmd_kserve.errors import ConfigError, Unauthorized
from llmd_kserve.governance.keys import KeyStore, add_key, load_keys, revoke_key


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def bearer(k: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {k}"}


def test_plaintext_never_at_rest_and_key_authenticates(tmp_path):
    path = tmp_path / "keys.yaml"
    plain, rec = add_key(path, tenant="acme", models=("m1",), rpm=5, priority=3)
    text = path.read_text()
    secret = plain.rsplit("-", 1)[-1] if plain.count("-") == 3 else plain.split("-", 3)[3]
    assert secret not in text and plain not in text and rec.hash in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    store = KeyStore(path)
    key = store.authenticate(bearer(plain))
    assert (key.id, key.tenant, key.models, key.rpm, key.priority) == (rec.id, "acme", ("m1",), 5, 3)
    assert key.allows("m1") and not key.allows("m2")
    for bad in (plain[:-1] + ("A" if plain[-1] != "A" else "B"), "sk-llmd-00000000-x", "", "nope"):
        with pytest.raises(Unauthorized):
            store.authenticate(bearer(bad))
    with pytest.raises(Unauthorized):
        store.authenticate({})


def test_revoke_and_new_keys_apply_on_reload_without_restart(tmp_path):
    path, clock = tmp_path / "keys.yaml", Clock()
    a, ra = add_key(path, tenant="a")
    store = KeyStore(path, clock=clock, poll_interval=1.0)
    assert store.authenticate(bearer(a)).id == ra.id
    revoke_key(path, ra.id)
    b, _ = add_key(path, tenant="b")
    os.utime(path, ns=(1, 1))  # a distinct mtime even on a coarse clock
    assert store.authenticate(bearer(a)).id == ra.id  # not checked again before poll_interval
    clock.t = 1.5
    with pytest.raises(Unauthorized, match="revoked"):
        store.authenticate(bearer(a))
    assert store.authenticate(bearer(b)).tenant == "b"


def test_bad_reload_keeps_previous_keys(tmp_path):
    path, clock = tmp_path / "keys.yaml", Clock()
    a, _ = add_key(path)
    results = []
    store = KeyStore(path, clock=clock, on_reload=results.append)
    path.write_text("keys: [ {id: x} ]\n")
    clock.t = 5
    assert store.authenticate(bearer(a))
    assert results == [False]


@pytest.mark.parametrize("doc, where", [
    ("keys: 3", "keys file"),
    ("keys: [ {id: a, salt: zz, hash: ab} ]", "keys[0]"),
    ("keys: [ {id: a, salt: ab, hash: ab, rpm: 0} ]", "keys[0].rpm"),
    ("keys: [ {id: a, salt: ab, hash: ab, priority: 10} ]", "keys[0].priority"),
    ("keys: [ {id: a, salt: ab, hash: ab, colour: red} ]", "keys[0]"),
    ("keys: [ {id: a, salt: ab, hash: ab}, {id: a, salt: ab, hash: ab} ]", "keys[1].id"),
])
def test_bad_keys_file_names_the_field(tmp_path, doc, where):
    path = tmp_path / "keys.yaml"
    path.write_text(doc)
    with pytest.raises(ConfigError) as exc:
        load_keys(path)
    assert where in str(exc.value) or (where == "keys file" and "keys" in str(exc.value))


def test_legacy_plain_tokens_still_work():
    store = KeyStore(legacy=("tok-1",))
    key = store.authenticate(bearer("tok-1"))
    assert key.tenant == "default" and key.rpm is None and "tok-1" not in key.id
    with pytest.raises(Unauthorized):
        store.authenticate(bearer("tok-2"))


def test_admin_role_is_kept_listed_and_checked(tmp_path):
    path = tmp_path / "keys.yaml"
    _, op = add_key(path, tenant="ops", admin=True)
    _, tenant = add_key(path, tenant="acme")
    keys = load_keys(path)
    assert keys[op.id].admin and not keys[tenant.id].admin
    assert keys[op.id].public()["admin"] is True and "hash" not in keys[op.id].public()
    assert path.read_text().count("admin: true") == 1  # written only where set
    path.write_text(path.read_text().replace("admin: true", "admin: 'yes'"))
    with pytest.raises(ConfigError, match=r"keys\[0\]\.admin"):
        load_keys(path)


def test_rewrite_keeps_mode_and_owner(tmp_path):
    path = tmp_path / "keys.yaml"
    add_key(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # a new file
    os.chmod(path, 0o640)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    before = path.stat()
    add_key(path)
    revoke_key(path, next(iter(load_keys(path))))
    after = path.stat()
    assert (after.st_mode, after.st_uid, after.st_gid) == (before.st_mode, before.st_uid, before.st_gid)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keys.yaml.lock", "keys.yaml"]  # no temp file left


def test_writes_through_a_symlink_keep_the_link(tmp_path):
    real, link = tmp_path / "real.yaml", tmp_path / "keys.yaml"
    add_key(real)
    link.symlink_to(real)
    add_key(link)
    assert link.is_symlink() and len(load_keys(real)) == 2


@pytest.mark.parametrize("content, says", [(b"", "empty"), (b"# only a comment\n", "empty"),
                                           (b"other: 1\n", "'keys' list"), (b"keys: [\n", "invalid YAML"),
                                           (b"# \xe9\nkeys: []\n", "not UTF-8")])
def test_empty_or_undecodable_file_is_an_error_but_keys_list_may_be_empty(tmp_path, content, says):
    path = tmp_path / "keys.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=says):
        load_keys(path)
    with pytest.raises(ConfigError, match=says):
        add_key(path)  # a writer does not start over on a broken file either
    path.write_text("keys: []\n")
    assert load_keys(path) == {}
    with pytest.raises(ConfigError, match="does not exist"):
        load_keys(tmp_path / "missing.yaml")


def test_unusable_file_keeps_last_good_keys_warns_every_poll_and_recovers(tmp_path, caplog):
    path, clock = tmp_path / "keys.yaml", Clock()
    a, ra = add_key(path)
    good = path.read_bytes()
    results: list[bool] = []
    store = KeyStore(path, clock=clock, on_reload=results.append, wall=lambda: 1000.0 + clock.t)
    assert store.health() == {"status": "ok", "keys": 1, "loaded_at": 1000.0}
    path.unlink()
    for t in (1.5, 3, 4.5):
        clock.t = t
        assert store.authenticate(bearer(a)).id == ra.id
    assert results == [False, False, False] and caplog.text.count("keys file NOT applied") == 3
    h = store.health()
    assert h["status"] == "stale" and h["since"] == 1001.5 and "does not exist" in h["error"]
    assert str(tmp_path) not in h["error"]  # the file's name, not where it lives
    path.write_bytes(good)
    clock.t = 6
    store.authenticate(bearer(a))
    assert store.health()["status"] == "ok" and results == [False, False, False]  # same content: nothing to apply
    revoke_key(path, ra.id)
    clock.t = 7.5
    with pytest.raises(Unauthorized, match="revoked"):
        store.authenticate(bearer(a))
    assert results[-1] is True and store.health()["loaded_at"] == 1007.5


def test_keys_file_missing_or_empty_at_start_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        KeyStore(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_bytes(b"")
    with pytest.raises(ConfigError, match="empty"):
        KeyStore(tmp_path / "empty.yaml")
