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
from llmd_kserve.governance.safefile import locked, replace_file

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
    """Most requests of this key in flight at once (flow control queues the rest; without it they get 429)."""
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
_BOOL_FIELDS = ("revoked", "admin")
_HEADER = "# llmd-kserve virtual keys: salted SHA-256 hashes only (edit with `llmd-kserve keys`)\n"


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
    for name in _BOOL_FIELDS:
        if not isinstance(raw.get(name, False), bool):
            raise ConfigError("must be true or false", f"{where}.{name}")
    for name in ("team", "name"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise ConfigError("must be a string", f"{where}.{name}")
    if not isinstance(raw.get("created", 0.0), int | float) or isinstance(raw.get("created"), bool):
        raise ConfigError("must be a number (seconds since the epoch)", f"{where}.created")
    try:
        bytes.fromhex(raw["salt"]), bytes.fromhex(raw["hash"])
    except ValueError:
        raise ConfigError("salt and hash must be hex", where) from None
    models = raw.get("models") or ()
    if isinstance(models, str) or not isinstance(models, list | tuple) or not all(isinstance(m, str) for m in models):
        raise ConfigError("must be a list of model names", f"{where}.models")
    if not isinstance(raw.get("tenant", LEGACY_TENANT), str):
        raise ConfigError("must be a string", f"{where}.tenant")
    return VirtualKey(**{**raw, "models": tuple(models)})


def read_keys_file(path: str | Path) -> bytes:
    """The file's bytes; ConfigError (one line) when it is missing or cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError("the keys file does not exist", str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the keys file: {exc.strerror or exc}", str(path)) from None


def parse_keys(data: bytes, source: str) -> dict[str, VirtualKey]:
    """Records by id. An empty file is an error (a file with no keys says ``keys: []``); ConfigError names the field."""
    try:
        doc = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (bad byte at offset {exc.start})", source) from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise ConfigError(f"invalid YAML: {' '.join(str(exc).split())}", source) from None
    if doc is None:
        raise ConfigError("the keys file is empty (a file without keys says `keys: []`)", source)
    if not isinstance(doc, dict) or "keys" not in doc or not isinstance(doc["keys"], list | None):
        raise ConfigError("a keys file is a mapping with a 'keys' list", source)
    out: dict[str, VirtualKey] = {}
    for i, raw in enumerate(doc["keys"] or []):
        rec = _record(i, raw, source)
        if rec.id in out:
            raise ConfigError(f"duplicate key id {rec.id!r}", f"{source}:keys[{i}].id")
        out[rec.id] = rec
    return out


def load_keys(path: str | Path) -> dict[str, VirtualKey]:
    """Records of a keys file by id; a missing, unreadable or empty file is a ConfigError."""
    return parse_keys(read_keys_file(path), str(path))


def save_keys(path: str | Path, keys: Mapping[str, VirtualKey]) -> None:
    """Write atomically, keeping the file's owner, group and mode (a new file: 0600); under ``locked`` when the keys
    came from the file. A router reloading mid-write never sees half a file."""
    docs = []
    for k in keys.values():
        d = {n: v for n, v in asdict(k).items() if v is not None and v != () and not (n in _BOOL_FIELDS and not v)}
        if "models" in d:
            d["models"] = list(d["models"])
        docs.append(d)
    replace_file(path, _HEADER + yaml.safe_dump({"keys": docs}, sort_keys=False))


def add_key(path: str | Path, **fields: Any) -> tuple[str, VirtualKey]:
    """Create a key in the file (a new file if there is none); (plaintext, record)."""
    with locked(path) as p:
        keys = load_keys(p) if os.path.lexists(p) else {}
        plaintext, rec = new_key(**fields)
        keys[rec.id] = rec
        save_keys(p, keys)
    return plaintext, rec


def revoke_key(path: str | Path, key_id: str) -> VirtualKey:
    """Mark a key revoked in the file; ConfigError for an unknown id."""
    with locked(path) as p:
        keys = load_keys(p)
        if key_id not in keys:
            raise ConfigError(f"no key with id {key_id!r}", str(path))
        keys[key_id] = replace(keys[key_id], revoked=True)
        save_keys(p, keys)
    return keys[key_id]


def legacy_key(token: str) -> VirtualKey:
    """A plain ``--api-keys-file`` token as an unlimited key of tenant ``default`` (id: its hash's first 12 hex)."""
    return VirtualKey(id=hashlib.sha256(token.encode()).hexdigest()[:12])


@dataclass(slots=True)
class KeyStore:
    """Authenticates bearer tokens against virtual keys (a watched file) and plain legacy tokens.

    The file is re-read every ``poll_interval`` s (on requests and ``/health``) and applied when its content hash
    changed. A file that cannot be used (missing, empty, unreadable, invalid) keeps the last good keys in force and
    is retried on every poll, each failure logged at WARNING and reported by ``health()``: revocations written
    since are not applied, so the failure must be seen. At start such a file is a ConfigError.
    """

    path: Path | None = None
    legacy: Collection[str] = ()
    poll_interval: float = 1.0
    clock: Callable[[], float] = time.monotonic
    keys: dict[str, VirtualKey] = field(default_factory=dict)
    _legacy: dict[str, VirtualKey] = field(default_factory=dict)
    _digest: str | None = None
    """SHA-256 of the content the current keys came from."""
    _checked: float = float("-inf")
    on_reload: Callable[[bool], None] | None = None
    _tenants: tuple[dict[str, VirtualKey], list[str]] | None = None
    wall: Callable[[], float] = time.time
    loaded_at: float | None = None
    """Wall time (epoch seconds) the current keys were read."""
    error: str | None = None
    """Why the file's current content is not applied (None while it is)."""
    stale_since: float | None = None
    """Wall time of the first failed read in a row."""

    def __post_init__(self) -> None:
        self._legacy = {t: legacy_key(t) for t in self.legacy if t}
        if self.path is not None:
            self.path = Path(self.path)
            data = read_keys_file(self.path)  # a missing, unreadable or bad file fails at start
            self.keys = parse_keys(data, str(self.path))
            self._digest = hashlib.sha256(data).hexdigest()
            self.loaded_at = self.wall()
            self._checked = self.clock()

    @property
    def enabled(self) -> bool:
        return self.path is not None or bool(self._legacy)

    def maybe_reload(self) -> bool:
        """Re-read the file (at most every ``poll_interval`` s); apply it if its content changed and is valid."""
        now = self.clock()
        if self.path is None or now - self._checked < self.poll_interval:
            return False
        self._checked = now
        try:
            data = read_keys_file(self.path)
            digest = hashlib.sha256(data).hexdigest()
            if digest == self._digest:
                if self.error is not None:
                    log.warning("keys file %s is readable again and unchanged: its %d keys apply", self.path,
                                len(self.keys))
                    self.error = self.stale_since = None
                return False
            keys = parse_keys(data, str(self.path))
        except ConfigError as exc:
            self._failed(str(exc))
            return False
        self.keys, self._digest, self.loaded_at = keys, digest, self.wall()
        if self.error is not None:
            log.warning("keys file %s applied again: %d keys", self.path, len(keys))
        else:
            log.info("keys file reloaded: %d keys", len(keys))
        self.error = self.stale_since = None
        if self.on_reload:
            self.on_reload(True)
        return True

    def _failed(self, error: str) -> None:
        if self.error is None:
            self.stale_since = self.wall()
        self.error = error
        age = self.wall() - (self.loaded_at or self.wall())
        log.warning("keys file NOT applied: %s. The %d keys read %.0f s ago stay in force; revocations and new keys "
                    "in the file are not applied until it can be read (retrying every %g s)",
                    error, len(self.keys), age, self.poll_interval)
        if self.on_reload:
            self.on_reload(False)

    def health(self) -> dict[str, Any] | None:
        """The keys file's state for ``/health`` (None without a keys file): ``ok`` or ``stale`` with the reason."""
        if self.path is None:
            return None
        out: dict[str, Any] = {"status": "ok" if self.error is None else "stale", "keys": len(self.keys),
                               "loaded_at": self.loaded_at}
        if self.error is not None:
            out["error"] = self.error.replace(str(self.path), self.path.name)
            out["since"] = self.stale_since
        return out

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
