"""Client of the router's admin API: read the active scheduler config, apply a new one (``/admin/config``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmd_kserve.config.loader import load_config
from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.errors import LlmdError


class AdminError(LlmdError):
    """The router refused or could not be reached; ``status`` 0 when there was no HTTP answer."""

    def __init__(self, message: str, status: int = 0, param: str | None = None) -> None:
        self.status, self.param = status, param
        super().__init__(message)


def _document(doc: Mapping[str, Any] | SchedulerConfig | str | Path) -> Mapping[str, Any]:
    from llmd_kserve.control.reload import config_document

    if isinstance(doc, SchedulerConfig):
        return config_document(doc)
    if isinstance(doc, str | Path):  # a shipped name or a YAML file: validated here, sent as a document
        return config_document(load_config(doc))
    return doc


def _call(method: str, url: str, body: bytes | None, api_key: str | None, timeout: float) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(f"{url.rstrip('/')}/admin/config", data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URL given by the caller
            answer: dict[str, Any] = json.loads(resp.read())
            return answer
    except urllib.error.HTTPError as exc:
        try:
            err = json.loads(exc.read()).get("error", {})
        except ValueError:
            err = {}
        raise AdminError(err.get("message") or f"HTTP {exc.code}", exc.code, err.get("param")) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminError(f"cannot reach the router at {url}: {reason}") from None


def apply_config(url: str, doc: Mapping[str, Any] | SchedulerConfig | str | Path, api_key: str | None = None,
                 timeout: float = 10.0) -> dict[str, Any]:
    """POST a scheduler config to a running router (``--admin``); returns ``{"status": "applied", "config_hash",
    ...}``. ``doc``: an EndpointPickerConfig mapping, a SchedulerConfig, a shipped config name or a YAML path.
    Raises AdminError (``.status``, ``.param``: the bad field) when the router refuses it."""
    return _call("POST", url, json.dumps(_document(doc)).encode(), api_key, timeout)


def active_config(url: str, api_key: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """``GET /admin/config``: ``{"config_hash", "source", "applied_at", "generation", "config", "last_error"}``."""
    return _call("GET", url, None, api_key, timeout)
