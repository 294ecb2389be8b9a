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
