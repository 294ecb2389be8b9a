"""Guardrail hooks around a request (pre-request, on the response) and two built-ins: blocklist, PII redaction.

A hook returns a verdict; ``Guardrails`` runs them in order. A hook that *raises* fails closed (the request is
refused with 503 ``guardrail_error``) unless it was configured ``failOpen: true``. Configured in YAML::

    guardrails:
      - type: blocklist          # refuse prompts (400) matching a keyword (case-insensitive) or regex
        keywords: [secret-project]
        patterns: ['\\b\\d{3}-\\d{2}-\\d{4}\\b']
        onResponse: flag         # flag (default) or off: answers are checked and flagged in the audit trail
      - type: pii-redaction      # what the audit trail logs in full mode is redacted (emails, phones, cards…)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml

from llmd_kserve.errors import ConfigError, HTTPError

log = logging.getLogger(__name__)


class Blocked(HTTPError):
    """400: a guardrail refused the request's content."""

    status = 400
    type = "BadRequestError"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, "messages", None, None)
        self.reason = reason
        self.headers = {"x-llmd-drop-reason": reason}


@dataclass(frozen=True, slots=True)
class Verdict:
    allow: bool = True
    reason: str = ""


ALLOW = Verdict()


class Guardrail(Protocol):
    """One hook; ``text`` is every string of the prompt (or of the answer) joined by newlines."""

    name: str
    fail_open: bool

    def pre_request(self, text: str) -> Verdict: ...
    def on_response(self, text: str) -> Verdict: ...
    def redact(self, text: str) -> str: ...


@dataclass(frozen=True, slots=True)
class Blocklist:
    """Refuses prompts containing a keyword (case-insensitive, whole text) or matching a regex."""

    keywords: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()
    check_response: bool = True
    fail_open: bool = False
    name: str = "blocklist"

    def _hit(self, text: str) -> str | None:
        low = text.lower()
        for i, k in enumerate(self.keywords):
            if k.lower() in low:
                return f"keyword[{i}]"  # the index, not the word: the reason is logged and returned
        for i, p in enumerate(self.patterns):
            if p.search(text):
                return f"pattern[{i}]"
        return None

    def pre_request(self, text: str) -> Verdict:
        hit = self._hit(text)
        return Verdict(False, f"{self.name}:{hit}") if hit else ALLOW

    def on_response(self, text: str) -> Verdict:
        hit = self._hit(text) if self.check_response else None
        return Verdict(False, f"{self.name}:{hit}") if hit else ALLOW

    def redact(self, text: str) -> str:
        return text


_PII = (
    ("EMAIL", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")),
    ("CARD", re.compile(r"\b(?:\d[ -]?){13,16}\b")),
    ("SSN", re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),
    ("PHONE", re.compile(r"(?<!\w)\+?\d{1,3}?[ .-]?\(?\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}\b")),
    ("IP", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")),
)


@dataclass(frozen=True, slots=True)
class PIIRedactor:
    """Redacts e-mail addresses, card numbers, US SSNs, phone numbers and IPv4 addresses from what is logged."""

    fail_open: bool = False
    name: str = "pii-redaction"

    def pre_request(self, text: str) -> Verdict:
        return ALLOW

    def on_response(self, text: str) -> Verdict:
        return ALLOW

    def redact(self, text: str) -> str:
        for label, rx in _PII:
            text = rx.sub(f"[{label}]", text)
        return text


class Guardrails:
    """The configured hooks, in order."""

    def __init__(self, hooks: Sequence[Guardrail] = ()) -> None:
        self.hooks = tuple(hooks)

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def _run(self, phase: Literal["pre_request", "on_response"], text: str) -> Verdict:
        for h in self.hooks:
            try:
                v = getattr(h, phase)(text)
            except Exception:
                log.exception("guardrail %s failed in %s", h.name, phase)
                if h.fail_open:
                    continue
                return Verdict(False, f"{h.name}:error")
            if not v.allow:
                return v
        return ALLOW

    def pre_request(self, text: str) -> None:
        """Raise ``Blocked`` (400) when a hook refuses the prompt (or fails closed: 503)."""
        v = self._run("pre_request", text)
        if not v.allow:
            if v.reason.endswith(":error"):
                raise HTTPError("A guardrail could not check this request; refused (fail-closed).", None, 503,
                                "ServiceUnavailableError")
            raise Blocked("The request was refused by the gateway's content policy.", "guardrail")

    def on_response(self, text: str) -> Verdict:
        return self._run("on_response", text)

    def redact(self, text: str) -> str:
        for h in self.hooks:
            try:
                text = h.redact(text)
            except Exception:
                log.exception("guardrail %s failed to redact", h.name)
                if not h.fail_open:
                    return "[REDACTION FAILED]"
        return text


_FIELDS: dict[str, set[str]] = {"blocklist": {"type", "keywords", "patterns", "onResponse", "failOpen"},
                                "pii-redaction": {"type", "failOpen"}}


def build_guardrails(doc: Any, source: str = "guardrails") -> Guardrails:
    """Guardrails from the parsed YAML (``{"guardrails": [...]}`` or the list itself); ConfigError names the field."""
    items = doc.get("guardrails", []) if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise ConfigError("must be a list of hooks", f"{source}:guardrails")
    hooks: list[Guardrail] = []
    for i, raw in enumerate(items):
        where = f"{source}:guardrails[{i}]"
        if not isinstance(raw, dict) or raw.get("type") not in _FIELDS:
            raise ConfigError(f"type must be one of {sorted(_FIELDS)}", f"{where}.type")
        unknown = set(raw) - _FIELDS[raw["type"]]
        if unknown:
            raise ConfigError(f"unknown field(s) {sorted(unknown)}", where)
        fail_open = raw.get("failOpen", False)
        if not isinstance(fail_open, bool):
            raise ConfigError("must be true or false", f"{where}.failOpen")
        if raw["type"] == "pii-redaction":
            hooks.append(PIIRedactor(fail_open))
            continue
        kws, pats = raw.get("keywords") or [], raw.get("patterns") or []
        if not isinstance(kws, list) or not all(isinstance(k, str) and k for k in kws):
            raise ConfigError("must be a list of non-empty strings", f"{where}.keywords")
        if not isinstance(pats, list) or not all(isinstance(p, str) for p in pats):
            raise ConfigError("must be a list of regular expressions", f"{where}.patterns")
        compiled = []
        for j, p in enumerate(pats):
            try:
                compiled.append(re.compile(p))
            except re.error as exc:
                raise ConfigError(f"invalid regex: {exc}", f"{where}.patterns[{j}]") from None
        on_resp = raw.get("onResponse", "flag")
        if on_resp not in ("flag", "off"):
            raise ConfigError("must be flag or off", f"{where}.onResponse")
        hooks.append(Blocklist(tuple(kws), tuple(compiled), on_resp == "flag", fail_open))
    return Guardrails(hooks)


def load_guardrails(path: str | Path) -> Guardrails:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", str(path)) from None
    return build_guardrails(doc or {}, str(path))


def prompt_text(body: dict[str, Any], kind: str) -> str:
    """Every string of the prompt (completions ``prompt``; every string in chat ``messages``) joined by newlines."""
    out: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                if k not in ("role", "type"):
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(body.get("messages") if kind == "chat" else body.get("prompt"))
    return "\n".join(out)
