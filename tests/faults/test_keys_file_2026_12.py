"""FAULTS-2026-12 H5: concurrent ``keys add``/``keys revoke`` lose no update; a rewrite keeps the file's owner and
mode, so a router running as another user keeps reading it; a router that cannot read an update says so (WARNING on
every poll, a metric, ``/health``) and keeps retrying. M15: a missing, empty or non-UTF-8 keys file is refused at
start and, on reload, leaves the last good keys in force, loudly. L3: a same-size edit with its mtime kept applies."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest

from llmd_kserve.governance.keys import KeyStore, add_key, load_keys, new_key, revoke_key
from llmd_kserve.router.app import running_router
from tests.faults.procs import ROOT, Proc, cli, engine, metric, request, running, wait_for
from tests.router.fake_upstream import running_fake

pytestmark = pytest.mark.slow  # real processes and sockets: the full suite runs them, the fast loop does not

_WRITER = """
import sys
from llmd_kserve.cli import main
path, op, *args = sys.argv[1:]
for arg in args:
    cmd = ["keys", "add", "--file", path, "--tenant", "new-" + arg] if op == "add" else ["keys", "revoke", "--file", path, arg]
    assert main(cmd) == 0
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_h5a_concurrent_add_and_revoke_lose_no_update(tmp_path):
    path = tmp_path / "keys.yaml"
    ids = [add_key(path, tenant=f"t{i}")[1].id for i in range(12)]
    writers = [[sys.executable, "-c", _WRITER, str(path), "revoke", *ids[i::3]] for i in range(3)]
    writers += [[sys.executable, "-c", _WRITER, str(path), "add", *(f"{w}-{i}" for i in range(12))] for w in "ab"]
    procs = [subprocess.Popen(w, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for w in writers]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    keys = load_keys(path)
    assert len(keys) == 12 + 24  # every add kept
    assert [k for k in ids if not keys[k].revoked] == []  # every revocation kept
    assert sum(k.tenant.startswith("new-") for k in keys.values()) == 24


def _health(url: str) -> dict:
    return json.loads(request(url + "/health")[1])


def _status(url: str, key: str) -> int:
    return request(url + "/v1/completions", {"prompt": "hi", "max_tokens": 2},
                   headers={"Authorization": f"Bearer {key}"})[0]


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def _nobody_python() -> list[str] | None:
    """A command running ``llmd-kserve`` as nobody: this interpreter, or the system's one of the same version with
    this environment's packages (when this one lives where nobody may not go); None if there is neither."""
    boot = (f"import sys; sys.path.append({sysconfig.get_paths()['purelib']!r}); "
            "from llmd_kserve.cli import main; sys.exit(main())")
    for exe in dict.fromkeys((sys.executable, f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")):
        try:
            if subprocess.run([exe, "-c", boot, "--version"], preexec_fn=_as_nobody, env=_env(),
                              capture_output=True, timeout=60).returncode == 0:
                return [exe, "-c", boot]
        except OSError:
            continue
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the router as nobody: needs root")
def test_h5b_router_as_another_user_reads_rewrites_and_says_when_it_cannot(tmp_path):
    shared = Path(tempfile.mkdtemp(prefix="keys-", dir="/tmp"))  # a directory nobody may enter
    try:
        os.chmod(shared, 0o755)
        path = shared / "keys.yaml"
        a, rec_a = add_key(path, tenant="a")
        ops, _ = add_key(path, tenant="ops", admin=True)  # reads /metrics
        os.chmod(path, 0o644)
        as_nobody = _nobody_python()
        if as_nobody is None:
            pytest.skip("no Python interpreter that nobody may run")
        eng = engine(tmp_path, "e0")
        with running(eng):
            r = Proc([*as_nobody, "router", "--host", "127.0.0.1", "--port", "0", "--endpoints", eng.url,
                      "--keys-file", str(path)], tmp_path / "router.log", preexec_fn=_as_nobody, ready="listening on")
            with running(r):
                assert _status(r.url, a) == 200
                out = subprocess.run(cli("keys", "add", "--file", str(path), "--tenant", "b"), env=_env(),
                                     capture_output=True, check=True)
                b = out.stdout.decode().strip()
                assert oct(path.stat().st_mode & 0o777) == "0o644"  # the root-run rewrite kept the mode
                assert wait_for(lambda: _status(r.url, b) == 200), r.output()[-2000:]
                subprocess.run(cli("keys", "revoke", "--file", str(path), rec_a.id), env=_env(), check=True,
                               capture_output=True)
                assert wait_for(lambda: _status(r.url, a) == 401)
                # the file made unreadable for the router: the last good keys stay, and it says so
                os.chmod(path, 0o600)
                c, _ = add_key(path, tenant="c")
                assert wait_for(lambda: _health(r.url).get("keys", {}).get("status") == "stale")
                keys = _health(r.url)["keys"]
                assert "Permission denied" in keys["error"] and keys["since"] > 0 and str(shared) not in keys["error"]
                assert _status(r.url, b) == 200 and _status(r.url, c) == 401 and _status(r.url, a) == 401
                polls = lambda: _health(r.url) and r.output().count("keys file NOT applied") >= 3  # noqa: E731
                assert wait_for(polls, every=0.5)  # a WARNING on every poll
                text = request(r.url + "/metrics", headers={"Authorization": f"Bearer {ops}"})[1].decode()
                assert metric(text, "llmd_gateway_keys_reloads_total", result="refused") >= 3
                os.chmod(path, 0o644)
                assert wait_for(lambda: _status(r.url, c) == 200)  # retried until readable again
                assert _health(r.url)["keys"]["status"] == "ok"
    finally:
        shutil.rmtree(shared)


def _exits(tmp: Path, keys_file: Path) -> tuple[int | None, str]:
    """(exit code, output) of a router started on ``keys_file``; None when it started serving instead."""
    log = tmp / "start.log"
    with open(log, "wb") as f:
        p = subprocess.Popen(cli("router", "--port", "0", "--endpoints", "http://127.0.0.1:9", "--keys-file",
                                 str(keys_file)), env=_env(), stdout=f, stderr=subprocess.STDOUT)
    while p.poll() is None and "listening on" not in log.read_text():
        time.sleep(0.05)
    if p.poll() is None:
        p.terminate()
        p.wait(15)
        return None, log.read_text()
    return p.returncode, log.read_text()


def test_m15_a_missing_empty_or_non_utf8_keys_file_is_refused_at_start(tmp_path):
    empty, bad = tmp_path / "empty.yaml", tmp_path / "bad.yaml"
    empty.write_text("# keys\n")
    add_key(bad)
    bad.write_bytes(bad.read_bytes().replace(b"# llmd", b"# \xe9 llmd"))
    for f, says in ((tmp_path / "missing.yaml", "does not exist"), (empty, "is empty"), (bad, "not UTF-8")):
        code, out = _exits(tmp_path, f)
        assert code == 2 and says in out and len(out.strip().splitlines()) == 1, out


async def test_m15_keys_file_gone_empty_or_bad_keeps_the_last_good_keys_loudly(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "llmd_kserve.governance.keys")
    path = tmp_path / "keys.yaml"
    a, rec_a = add_key(path, tenant="a")
    good = path.read_bytes()
    async with running_fake() as fake, running_router(endpoints=[fake.url], keys_file=str(path)) as r, \
            aiohttp.ClientSession() as s:
        store = r.state.governance.gateway.keys
        store.poll_interval = 0.01

        async def status() -> int:
            await asyncio.sleep(0.02)  # past the poll interval: every request re-reads the file
            async with s.post(r.url + "/v1/completions", json={"model": "fake-model", "prompt": "hi"},
                              headers={"Authorization": f"Bearer {a}"}) as resp:
                return resp.status

        async def health() -> dict:
            await asyncio.sleep(0.02)
            async with s.get(r.url + "/health") as resp:
                return (await resp.json())["keys"]

        assert await status() == 200
        breakages = [(lambda: path.rename(tmp_path / "away.yaml"), "does not exist"),
                     (lambda: path.write_bytes(b""), "empty"),
                     (lambda: path.write_bytes(good.replace(b"# llmd", b"# \xe9 llmd")), "not UTF-8")]
        for n, (breakage, says) in enumerate(breakages):
            breakage()
            assert [await status() for _ in range(3)] == [200, 200, 200], says  # not 401, not 500
            h = await health()
            assert h["status"] == "stale" and says in h["error"] and h["keys"] == 1
            assert caplog.text.count("keys file NOT applied") >= 4 * (n + 1)  # every poll warns
            if n == 0:
                (tmp_path / "away.yaml").rename(path)
            else:
                path.write_bytes(good)
            assert await status() == 200 and (await health())["status"] == "ok"
        path.write_bytes(good.replace(b"# llmd", b"# \xe9 llmd"))
        assert await status() == 200
        path.write_bytes(good)  # fixed, then revoked: applied at once, no restart or touch needed
        revoke_key(path, rec_a.id)
        assert await status() == 401 and (await health())["status"] == "ok"


def test_l3_same_size_edit_with_preserved_mtime_is_applied(tmp_path):
    path, backup = tmp_path / "keys.yaml", tmp_path / "backup.yaml"
    old, rec = add_key(path, tenant="t")
    new, fresh = new_key(tenant="t")  # the same id with a new secret, from a "backup"
    backup.write_text(path.read_text().replace(rec.salt, fresh.salt).replace(rec.hash, fresh.hash))
    new = new.replace(fresh.id, rec.id)
    st = path.stat()
    os.utime(backup, ns=(st.st_atime_ns, st.st_mtime_ns))
    t = [0.0]
    store = KeyStore(path, clock=lambda: t[0])
    assert store.authenticate({"Authorization": f"Bearer {old}"}).id == rec.id
    shutil.copy2(backup, path)  # cp -p: same size, same mtime
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    t[0] = 5.0
    assert store.authenticate({"Authorization": f"Bearer {new}"}).id == rec.id
    with pytest.raises(Exception, match="Invalid"):
        store.authenticate({"Authorization": f"Bearer {old}"})
