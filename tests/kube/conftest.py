"""Shared helpers for the kube tests: CRD-schema validation of rendered objects (vendored upstream schemas)."""

from __future__ import annotations

import copy
import functools
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("kubernetes")

CRD_DIR = Path(__file__).parent / "crds"
"""Vendored ``openAPIV3Schema``s, copied unchanged from ``../shared/kserve-crds`` by ``crds/extract.py``; KEDA's CRDs
as YAML in ``crds/keda/``."""
CORE_MODELS = {"ConfigMap": "V1ConfigMap", "ServiceAccount": "V1ServiceAccount", "Role": "V1Role",
               "RoleBinding": "V1RoleBinding", "Deployment": "V1Deployment", "Service": "V1Service"}


def _strict(node: Any) -> Any:
    """Reject unknown fields (typos) where the API server would prune them: ``additionalProperties: false`` on every
    object schema that lists properties, has no ``additionalProperties`` and does not preserve unknown fields."""
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


KEDA_DIR = CRD_DIR / "keda"
"""KEDA's CRD YAML files, unchanged (see its README for the commit)."""


def _keda_schema(api_version: str, kind: str) -> dict[str, Any]:
    group, version = api_version.split("/")
    for path in sorted(KEDA_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind:
            return next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)
    raise KeyError(f"no vendored CRD for {api_version} {kind}")


@functools.cache
def schema_for(api_version: str, kind: str, strict: bool = True) -> dict[str, Any]:
    if api_version.startswith("keda.sh/"):
        schema = _keda_schema(api_version, kind)
    else:
        path = CRD_DIR / f"{api_version}/{kind}".replace("/", "_")
        path = path.with_name(path.name + ".json.gz")
        schema = json.loads(gzip.decompress(path.read_bytes()))
    return _strict(copy.deepcopy(schema)) if strict else schema


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Every violation of the matching CRD's openAPIV3Schema (strict about unknown fields)."""
    validator = jsonschema.Draft202012Validator(schema_for(obj["apiVersion"], obj["kind"]))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def core_errors(obj: dict[str, Any]) -> list[str]:
    """A core object must survive a round trip through the client's typed model unchanged (no unknown field)."""
    from types import SimpleNamespace

    from kubernetes import client

    api = client.ApiClient()
    model = api.deserialize(SimpleNamespace(data=json.dumps(obj)), CORE_MODELS[obj["kind"]])
    back = api.sanitize_for_serialization(model)
    return [] if back == obj else [f"round trip changed the object: {json.dumps(back)} != {json.dumps(obj)}"]


def validate(obj: dict[str, Any]) -> list[str]:
    assert obj["metadata"].get("name"), "metadata.name missing"
    assert obj["metadata"].get("namespace"), "metadata.namespace missing"
    return core_errors(obj) if obj["kind"] in CORE_MODELS else crd_errors(obj)


@pytest.fixture
def k8s_validate():
    """``k8s_validate(obj) -> list[str]``: CRD-schema errors (custom kinds) or round-trip errors (core kinds)."""
    return validate
