"""Push a scheduler config to a running router (``POST /admin/config``) and export it as YAML and a ConfigMap.

    push_config(router_url, config, api_key=None, timeout=10.0) -> dict    the router's answer ({"status": "applied", …})
    config_document(config) -> dict            the EndpointPickerConfig mapping (camelCase, as in the YAML files)
    config_yaml(config) -> str
    configmap_manifest(config, name="llmd-router-config", namespace="llmd") -> dict   what ``kube`` mounts in the router
    export_config(config, directory, name=…, namespace=…) -> (yaml_path, configmap_path)

The router answers 200 ``{"status": "applied", ...}``, or an OpenAI-shaped error (400 for a bad config, naming the
field path; 401 without the right key). Every failure raises :class:`ApplyError` with one readable line.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.errors import LlmdError

CONFIG_KEY = "config.yaml"
"""The ConfigMap key the router pod reads (``kube.router.CONFIG_KEY``)."""


class ApplyError(LlmdError):
    """The router refused or could not be reached; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None, param: str | None = None) -> None:
        self.status, self.param = status, param
        super().__init__(message)


def config_document(config: SchedulerConfig) -> dict[str, Any]:
    return config.model_dump(by_alias=True, exclude_none=True, exclude={"source"})


def config_yaml(config: SchedulerConfig) -> str:
    return yaml.safe_dump(config_document(config), sort_keys=False)


def push_config(router_url: str, config: SchedulerConfig, api_key: str | None = None,
                timeout: float = 10.0) -> dict[str, Any]:
    """``POST {router_url}/admin/config`` with the config as JSON; the router's JSON answer on 200."""
    url = router_url.rstrip("/") + "/admin/config"
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=json.dumps(config_document(config)).encode(), headers=headers,
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise _refused(exc, url) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ApplyError(f"router at {router_url} is not answering ({reason})") from None
    except ValueError:
        raise ApplyError(f"router at {router_url} answered /admin/config with something that is not JSON") from None


def _refused(exc: urllib.error.HTTPError, url: str) -> ApplyError:
    try:
        err = json.loads(exc.read() or b"{}").get("error") or {}
    except ValueError:
        err = {}
    message, param = err.get("message"), err.get("param")
    if exc.code == 404:
        return ApplyError(f"this router has no {url.rsplit('/', 2)[-2]}/config endpoint (HTTP 404): "
                          "it predates config reload", 404)
    if exc.code == 401:
        return ApplyError(f"the router refused the config: {message or 'unauthorized'} (HTTP 401; "
                          "pass api_key=…)", exc.code, param)
    where = f"{param}: " if param and param not in (message or "") else ""
    return ApplyError(f"the router refused the config: {where}{message or exc.reason} (HTTP {exc.code})",
                      exc.code, param)


def configmap_manifest(config: SchedulerConfig, name: str = "llmd-router-config",
                       namespace: str = "llmd") -> dict[str, Any]:
    """A ConfigMap holding the config under ``config.yaml``, as ``kube`` renders it for the router pod."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "llmd-kserve", "app.kubernetes.io/component": "router"}},
            "data": {CONFIG_KEY: config_yaml(config)}}


def export_config(config: SchedulerConfig, directory: str | Path, name: str = "llmd-router-config",
                  namespace: str = "llmd") -> tuple[Path, Path]:
    """Write ``scheduler-config.yaml`` and ``configmap.yaml`` into ``directory``; their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    cfg, cm = out / "scheduler-config.yaml", out / "configmap.yaml"
    cfg.write_text(config_yaml(config))
    cm.write_text(yaml.safe_dump(configmap_manifest(config, name, namespace), sort_keys=False))
    return cfg, cm
