"""Pipeline steps that place the stack: render manifests, deploy (KServe or the local stack), wait, tear down.

A deployment is named by a *handle*, a JSON-ready dict: ``{"target": "kserve", "name", "namespace"}`` or
``{"target": "local", "state_file", ...}``; ``wait_ready`` adds ``router_url``. ``teardown`` needs no handle (an
exit handler cannot read the outputs of the steps it guards): KServe objects are found by their instance label,
the local stack by the state file of the run (``state_dir`` + ``run_id``), so it cleans up after any failure.
``apis`` (a :class:`~llmd_kserve.kube.KubeApis`, e.g. ``FakeKubeApi().apis()``) is for tests; None loads the
in-cluster config or the kubeconfig.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from pathlib import Path
from typing import Any, Literal

import yaml

from llmd_kserve.errors import ConfigError, LlmdError
from llmd_kserve.kube.spec import DeploymentSpec, parse_spec
from llmd_kserve.steps import local

log = logging.getLogger(__name__)

Target = Literal["kserve", "local"]
TARGETS: tuple[str, ...] = ("kserve", "local")


def load_spec_text(spec: str | dict[str, Any] | None) -> DeploymentSpec:
    """A deployment spec from YAML text, a file path, a mapping, or nothing (the defaults)."""
    if not spec:
        return DeploymentSpec()
    if isinstance(spec, dict):
        return parse_spec(spec)
    path = Path(spec) if "\n" not in spec and len(spec) < 4096 else None
    text = path.read_text() if path is not None and path.is_file() else spec
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid deployment spec YAML: {exc}", "spec") from exc
    if not isinstance(data, dict):
        raise ConfigError("the deployment spec must be a mapping (YAML text or a file path)", "spec")
    return parse_spec(data)


def render_manifests(out_dir: str, spec: str | dict[str, Any] | None = None, mode: str = "sim") -> list[str]:
    """Render the KServe manifests of ``spec`` in ``mode`` as a flat kustomize directory; returns the files."""
    from llmd_kserve.kube.render import write_mode

    if mode not in ("sim", "aggregated", "pd"):
        raise ConfigError(f"mode must be sim, aggregated or pd, got {mode!r}", "mode")
    return [str(p) for p in write_mode(out_dir, load_spec_text(spec).with_mode(mode))]  # type: ignore[arg-type]


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ConfigError(f"target must be one of {', '.join(TARGETS)}, got {target!r}", "target")


def deploy(target: str = "local", *, spec: str | dict[str, Any] | None = None, mode: str = "sim",
           engines: int = 2, prefill: int = 0, decode: int = 0, config: str = "default",
           num_blocks: int | None = None, time_scale: float = 1.0, state_dir: str = "", run_id: str = "local",
           apis: Any = None) -> dict[str, Any]:
    """Start the stack: apply ``spec`` (with ``mode``) on KServe without waiting, or start the detached local stack
    (``engines`` aggregated, or ``prefill`` + ``decode``, running ``config``). Returns the handle."""
    _check_target(target)
    if target == "kserve":
        from llmd_kserve.kube.deploy import deploy as kube_deploy

        dspec = load_spec_text(spec).with_mode(mode)  # type: ignore[arg-type]
        st = kube_deploy(dspec, apis=apis, wait=False)
        log.info("applied %d objects of %s/%s", len(st.objects), dspec.namespace, dspec.name)
        return {"target": "kserve", "name": dspec.name, "namespace": dspec.namespace,
                "objects": [f"{o.kind}/{o.name}" for o in st.objects]}
    path = local.state_path(state_dir, run_id)
    state = local.start(path, engines=engines, prefill=prefill, decode=decode, config=config,
                        num_blocks=num_blocks, time_scale=time_scale)
    return {"target": "local", "state_file": str(path), **state}


def wait_ready(handle: dict[str, Any], timeout: float = 900.0, poll: float = 5.0, apis: Any = None,
               sleep: Any = time.sleep, clock: Any = time.monotonic) -> dict[str, Any]:
    """Block until the deployment serves: KServe Ready conditions (then its router URL), or the local router
    answering ``/v1/models`` with a model. Returns the handle with ``router_url``."""
    _check_target(handle.get("target", ""))
    if handle["target"] == "kserve":
        from llmd_kserve.kube.deploy import wait_ready as kube_wait

        st = kube_wait(handle["name"], handle["namespace"], apis=apis, timeout=timeout, poll=poll, clock=clock,
                       sleep=sleep)
        url = st.router_url or st.graph_url
        if not url:
            raise LlmdError(f"{handle['name']!r} is Ready but reports no router URL")
        return {**handle, "router_url": url}
    url = handle.get("router_url") or local.read(Path(handle["state_file"]))["router_url"]
    deadline = clock() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as resp:
                if resp.status == 200 and json.loads(resp.read()).get("data"):
                    return {**handle, "router_url": url}
        except (OSError, ValueError):  # not up yet, or not JSON yet
            pass
        if clock() >= deadline:
            raise LlmdError(f"the local router at {url} lists no model after {timeout:g}s")
        sleep(min(poll, 0.5))


def teardown(target: str = "local", *, name: str = "llmd", namespace: str = "llmd", state_dir: str = "",
             run_id: str = "local", apis: Any = None) -> list[str]:
    """Remove what ``deploy`` created, whatever state it reached: every KServe object labelled with ``name``, or the
    local stack of ``run_id``. Returns what was removed (``Kind/name``, or ``pid/N``); nothing there: []."""
    _check_target(target)
    if target == "kserve":
        from llmd_kserve.kube.deploy import teardown as kube_teardown

        return kube_teardown(name, namespace, apis=apis)
    return [f"pid/{p}" for p in local.stop(local.state_path(state_dir, run_id))]
