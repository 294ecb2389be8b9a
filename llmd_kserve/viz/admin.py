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

from pathlib import Path
from typing import Any

import yaml

from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.control.reload import config_document
from llmd_kserve.errors import LlmdError
from llmd_kserve.router.admin_client import AdminError, apply_config

CONFIG_KEY = "config.yaml"
"""The ConfigMap key the router pod reads (``kube.router.CONFIG_KEY``)."""

__all__ = ["ApplyError", "config_document", "config_yaml", "configmap_manifest", "export_config", "push_config"]


class ApplyError(LlmdError):
    """The router refused or could not be reached; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None, param: str | None = None) -> None:
        self.status, self.param = status, param
        super().__init__(message)


def config_yaml(config: SchedulerConfig) -> str:
    return yaml.safe_dump(config_document(config), sort_keys=False)


def push_config(router_url: str, config: SchedulerConfig, api_key: str | None = None,
                timeout: float = 10.0) -> dict[str, Any]:
    """``POST {router_url}/admin/config`` with the config (the router's own client,
    :func:`llmd_kserve.router.admin_client.apply_config`); the router's JSON answer on 200."""
    try:
        return apply_config(router_url, config, api_key, timeout)
    except AdminError as exc:
        raise _refused(exc, router_url) from None
    except ValueError:
        raise ApplyError(f"router at {router_url} answered /admin/config with something that is not JSON") from None


def _refused(exc: AdminError, router_url: str) -> ApplyError:
    """The router client's error as one line a panel can show."""
    message = str(exc).splitlines()[0] if str(exc) else ""
    if not exc.status:
        return ApplyError(f"router at {router_url} is not answering ({message.rsplit(': ', 1)[-1]})")
    if exc.status == 404:
        return ApplyError("this router has no admin/config endpoint (HTTP 404): it predates config reload", 404)
    hint = "; pass api_key=…" if exc.status == 401 else ""
    where = f"{exc.param}: " if exc.param and exc.param not in message else ""
    return ApplyError(f"the router refused the config: {where}{message} (HTTP {exc.status}{hint})", exc.status,
                      exc.param)


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
