"""Virtual API keys: a YAML file of salted key hashes with tenant, models, priority and limits; reloaded on change.

A key reads ``sk-llmd-<id>-<secret>``: ``id`` (public, 8 hex digits) names the record, ``secret`` (32 random bytes,
urlsafe base64) is checked against ``sha256(salt || secret)``. The plaintext is shown once by ``keys add`` and never
stored. Secrets are high-entropy, so one salted SHA-256 is enough (no password stretching needed); the comparison
is constant-time. The principal that logs, metrics and the audit trail see is the key's id, never the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from llmd_kserve.errors import ConfigError, HTTPError, Unauthorized

log = logging.getLogger(__name__)
PREFIX = "sk-llmd-"
LEGACY_TENANT = "default"


class Forbidden(HTTPError):
    """403: the key is valid but may not do this (model not allowed)."""

    status = 403
    type = "PermissionDeniedError"


@dataclass(frozen=True, slots=True)
class VirtualKey:
    """One key's record; ``None`` limits mean unlimited, empty ``models`` means every model."""

    id: str
    tenant: str = LEGACY_TENANT
    team: str | None = None
    name: str | None = None
    models: tuple[str, ...] = ()
    priority: int = 0
    """Flow-control band 0..9: higher is dispatched first."""
    rpm: int | None = None
    tpm: int | None = None
    token_budget: int | None = None
    """Total prompt + completion tokens this key may use (metered from the engines' usage)."""
    max_concurrency: int | None = None
    revoked: bool = False
    admin: bool = False
    """An operator key (``keys add --admin``) rather than a tenant's."""
    created: float = 0.0
    salt: str = ""
    hash: str = ""

    def allows(self, model: str | None) -> bool:
        return not self.models or (model is not None and model in self.models)

    def public(self) -> dict[str, Any]:
        """Everything but the salt and hash (what ``keys list`` prints)."""
        d = asdict(self)
        del d["salt"], d["hash"]
        d["models"] = list(self.models)
        return d


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def new_key(**fields: Any) -> tuple[str, VirtualKey]:
    """(plaintext, record) of a fresh key; ``fields`` are VirtualKey fields (tenant, models, rpm…)."""
    kid = secrets.token_hex(4)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    salt = secrets.token_hex(16)
    rec = VirtualKey(id=kid, created=round(time.time(), 3), salt=salt, hash=_digest(salt, secret), **fields)
    return f"{PREFIX}{kid}-{secret}", rec


_INT_FIELDS = ("priority", "rpm", "tpm", "token_budget", "max_concurrency")


def _record(i: int, raw: Any, source: str) -> VirtualKey:
    where = f"{source}:keys[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError("must be a mapping", where)
    unknown = set(raw) - set(VirtualKey.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown field(s) {sorted(unknown)}", where)
    for name in ("id", "salt", "hash"):
        if not isinstance(raw.get(name), str) or not raw[name]:
            raise ConfigError("must be a non-empty string", f"{where}.{name}")
    for name in _INT_FIELDS:
        v = raw.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or (not 0 <= v <= 9 if name == "priority" else v < 1)):
            raise ConfigError(f"must be an integer {'0..9' if name == 'priority' else '>= 1'}", f"{where}.{name}")
    try:
        bytes.fromhex(raw["salt"]), bytes.fromhex(raw["hash"])
    except ValueError:
        raise ConfigError("salt and hash must be hex", where) from None
    models = raw.get("models") or ()
    if isinstance(models, str) or not all(isinstance(m, str) for m in models):
        raise ConfigError("must be a list of model names", f"{where}.models")
    if not isinstance(raw.get("tenant", LEGACY_TENANT), str):
        raise ConfigError("must be a string", f"{where}.tenant")
    return VirtualKey(**{**raw, "models": tuple(models)})


def load_keys(path: str | Path) -> dict[str, VirtualKey]:
    """Records of a keys file by id; a missing file is empty. ConfigError names the bad field."""
    p = Path(path)
    if not p.exists():
        return {}
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", str(p)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys", []), list):
        raise ConfigError("a keys file is a mapping with a 'keys' list", str(p))
    out: dict[str, VirtualKey] = {}
    for i, raw in enumerate(doc.get("keys") or []):
        rec = _record(i, raw, str(p))
        if rec.id in out:
            raise ConfigError(f"duplicate key id {rec.id!r}", f"{p}:keys[{i}].id")
        out[rec.id] = rec
    return out


def save_keys(path: str | Path, keys: Mapping[str, VirtualKey]) -> None:
    """Write atomically (temp file + rename, mode 0600): a router reloading mid-write never sees half a file."""
    p = Path(path)
    docs = []
    for k in keys.values():
        d = {n: v for n, v in asdict(k).items() if v is not None and v != () and not (n == "revoked" and not v)}
        if "models" in d:
            d["models"] = list(d["models"])
        docs.append(d)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# llmd-kserve virtual keys: salted SHA-256 hashes only (edit with `llmd-kserve keys`)\n")
        yaml.safe_dump({"keys": docs}, f, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def add_key(path: str | Path, **fields: Any) -> tuple[str, VirtualKey]:
    keys = load_keys(path)
    plaintext, rec = new_key(**fields)
    keys[rec.id] = rec
    save_keys(path, keys)
    return plaintext, rec


def revoke_key(path: str | Path, key_id: str) -> VirtualKey:
    keys = load_keys(path)
    if key_id not in keys:
        raise ConfigError(f"no key with id {key_id!r}", str(path))
    keys[key_id] = replace(keys[key_id], revoked=True)
    save_keys(path, keys)
    return keys[key_id]


def legacy_key(token: str) -> VirtualKey:
    """A plain ``--api-keys-file`` token as an unlimited key of tenant ``default`` (id: its hash's first 12 hex)."""
    return VirtualKey(id=hashlib.sha256(token.encode()).hexdigest()[:12])


@dataclass(slots=True)
class KeyStore:
    """Authenticates bearer tokens against virtual keys (a watched file) and plain legacy tokens."""

    path: Path | None = None
    legacy: Collection[str] = ()
    poll_interval: float = 1.0
    clock: Callable[[], float] = time.monotonic
    keys: dict[str, VirtualKey] = field(default_factory=dict)
    _legacy: dict[str, VirtualKey] = field(default_factory=dict)
    _stamp: tuple[int, int] | None = None
    _checked: float = float("-inf")
    on_reload: Callable[[bool], None] | None = None
    _tenants: tuple[dict[str, VirtualKey], list[str]] | None = None

    def __post_init__(self) -> None:
        self._legacy = {t: legacy_key(t) for t in self.legacy if t}
        if self.path is not None:
            self.path = Path(self.path)
            self.keys = load_keys(self.path)  # a bad file fails at start
            self._stamp = self._stat()
            self._checked = self.clock()

    @property
    def enabled(self) -> bool:
        return self.path is not None or bool(self._legacy)

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)  # type: ignore[arg-type]
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def maybe_reload(self) -> bool:
        """Reload the file if it changed (checked at most every ``poll_interval`` s); a bad file keeps the old keys."""
        now = self.clock()
        if self.path is None or now - self._checked < self.poll_interval:
            return False
        self._checked = now
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.keys = load_keys(self.path)
        except ConfigError as exc:
            log.warning("keys file not reloaded (the previous keys stay): %s", exc)
            if self.on_reload:
                self.on_reload(False)
            return False
        log.info("keys file reloaded: %d keys", len(self.keys))
        if self.on_reload:
            self.on_reload(True)
        return True

    def authenticate(self, headers: Mapping[str, str]) -> VirtualKey:
        """The key of ``Authorization: Bearer <token>``; ``Unauthorized`` (401) when missing, unknown or revoked."""
        self.maybe_reload()
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            if token.startswith(PREFIX):
                kid, _, secret = token[len(PREFIX):].partition("-")
                rec = self.keys.get(kid)
                if rec is not None and hmac.compare_digest(_digest(rec.salt, secret), rec.hash):
                    if rec.revoked:
                        raise Unauthorized("This API key has been revoked.")
                    return rec
            for known, rec in self._legacy.items():
                if hmac.compare_digest(known.encode(), token.encode()):
                    return rec
        raise Unauthorized("Invalid or missing API key (Authorization: Bearer <key>).")

    def tenants(self) -> list[str]:
        """Tenants of the file (sorted, cached per reload) plus ``default``."""
        if self._tenants is None or self._tenants[0] is not self.keys:
            self._tenants = (self.keys, sorted({k.tenant for k in self.keys.values()} | {LEGACY_TENANT}))
        return self._tenants[1]
