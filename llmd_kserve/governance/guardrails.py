"""Guardrail hooks around a request (pre-request, on the response) and two built-ins: blocklist, PII redaction.

A hook returns a verdict; ``Guardrails`` runs them in order. A hook that *raises* fails closed (the request is
refused with 503 ``guardrail_error``) unless it was configured ``failOpen: true``. Configured in YAML::

    guardrails:
      - type: blocklist          # refuse prompts (400) matching a keyword (case-insensitive) or regex
        keywords: [secret-project]
        patterns: ['\\b\\d{3}-\\d{2}-\\d{4}\\b']
        onResponse: flag         # flag (default) or off: answers are checked and flagged in the audit trail
        tokenIdPrompts: refuse   # refuse (default) or allow token-id prompts the router cannot turn into text
      - type: pii-redaction      # what the audit trail logs in full mode is redacted (emails, phones, cards…)

Matching runs on the normalised text (``request_text.normalize``: NFKC, format characters dropped), so full-width
letters and zero-width characters do not hide a keyword. The built-in redaction patterns run in linear time on any
input; operator ``patterns`` run with Python's ``re`` and should avoid nested unbounded repeats.
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
from llmd_kserve.governance.request_text import RequestText, fold, normalize, warm_up

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
    """One hook; ``text`` is the request's rendered text (``request_text``) or the answer's text."""

    @property
    def name(self) -> str: ...
    @property
    def fail_open(self) -> bool: ...

    def pre_request(self, text: str) -> Verdict: ...
    def on_response(self, text: str) -> Verdict: ...
    def redact(self, text: str) -> str: ...


@dataclass(frozen=True, slots=True)
class Blocklist:
    """Refuses prompts containing a keyword (case-insensitive, whole text) or matching a regex, both on the
    normalised text; and, with ``token_id_prompts="refuse"``, token-id prompts the router cannot read."""

    keywords: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()
    check_response: bool = True
    fail_open: bool = False
    name: str = "blocklist"
    token_id_prompts: Literal["refuse", "allow"] = "refuse"

    def __post_init__(self) -> None:
        warm_up()  # the format-character table, at start rather than on the first request

    def _hit(self, text: str) -> str | None:
        norm = normalize(text)
        low = norm.casefold()
        for i, k in enumerate(self.keywords):
            if fold(k) in low:
                return f"keyword[{i}]"  # the index, not the word: the reason is logged and returned
        for i, p in enumerate(self.patterns):
            if p.search(norm):
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


_LOCAL = "A-Za-z0-9._%+-"
_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_EMAIL_TAIL = rf"[{_LOCAL}]+@[A-Za-z0-9.-]+\.[A-Za-z]{{2,}}"
_EMAIL = re.compile(rf"(?<![{_LOCAL}]){_EMAIL_TAIL}")
"""Tried only where a run of local-part characters starts, so each character is scanned a bounded number of times
(trying every position inside a long run, as a plain pattern does, is quadratic)."""
_EMAIL_HERE = re.compile(_EMAIL_TAIL)


def _redact_emails(text: str) -> str:
    out: list[str] = []
    pos = kept = 0
    while True:
        m = None
        if 0 < pos < len(text) and text[pos - 1] in _LOCAL_CHARS and text[pos] in _LOCAL_CHARS:
            m = _EMAIL_HERE.match(text, pos)  # right after a match that ended inside a run: this run starts here
        if m is None:
            m = _EMAIL.search(text, pos)
        if m is None:
            break
        out += (text[kept:m.start()], "[EMAIL]")
        pos = kept = m.end()
    out.append(text[kept:])
    return "".join(out)


_PII = (  # every repeat is bounded or, for e-mail, tried once per run: linear time on any input
    ("CARD", re.compile(r"\b(?:\d[ -]?){13,16}\b")),
    ("SSN", re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),
    ("PHONE", re.compile(r"(?<!\w)\+?\d{1,3}?[ .-]?\(?\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}\b")),
    ("IP", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")),
)
_CHUNK = 64 * 1024
"""Redaction works on pieces of about this many characters, cut after a newline (no pattern spans one), so a
worker thread lets go of the interpreter between pieces."""


def _pieces(text: str) -> list[str]:
    out, i = [], 0
    while i < len(text):
        j = text.find("\n", i + _CHUNK)
        j = len(text) if j == -1 else j + 1
        out.append(text[i:j])
        i = j
    return out


def redact_pii(text: str) -> str:
    """``text`` with e-mail addresses, card numbers, US SSNs, phone numbers and IPv4 addresses replaced by a label."""
    done = []
    for piece in _pieces(text):
        piece = _redact_emails(piece) if "@" in piece else piece
        for label, rx in _PII:
            piece = rx.sub(f"[{label}]", piece)
        done.append(piece)
    return "".join(done)


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
        return redact_pii(text)


class Guardrails:
    """The configured hooks, in order."""

    def __init__(self, hooks: Sequence[Guardrail] = ()) -> None:
        self.hooks = tuple(hooks)

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def _run(self, phase: Literal["pre_request", "on_response"], text: str) -> Verdict:
        for h in self.hooks:
            try:
                v: Verdict = getattr(h, phase)(text)
            except Exception:
                log.exception("guardrail %s failed in %s", h.name, phase)
                if h.fail_open:
                    continue
                return Verdict(False, f"{h.name}:error")
            if not v.allow:
                return v
        return ALLOW

    def pre_request(self, prompt: RequestText | str) -> None:
        """Raise ``Blocked`` (400) when a hook refuses the prompt (or fails closed: 503)."""
        req = prompt if isinstance(prompt, RequestText) else RequestText(prompt)
        if not req.readable and any(getattr(h, "token_id_prompts", "allow") == "refuse" for h in self.hooks):
            raise Blocked("This gateway cannot read prompts sent as token ids, so its content policy refuses them; "
                          "send the prompt as text.", "guardrail")
        v = self._run("pre_request", req.text)
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


_FIELDS: dict[str, set[str]] = {"blocklist": {"type", "keywords", "patterns", "onResponse", "failOpen", "tokenIdPrompts"},
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
        if not isinstance(kws, list) or not all(isinstance(k, str) and fold(k).strip() for k in kws):
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
        ids = raw.get("tokenIdPrompts", "refuse")
        if ids not in ("refuse", "allow"):
            raise ConfigError("must be refuse or allow", f"{where}.tokenIdPrompts")
        hooks.append(Blocklist(tuple(kws), tuple(compiled), on_resp == "flag", fail_open, token_id_prompts=ids))
    return Guardrails(hooks)


def load_guardrails(path: str | Path) -> Guardrails:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", str(path)) from None
    return build_guardrails(doc or {}, str(path))
