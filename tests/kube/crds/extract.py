"""Regenerate the vendored CRD schemas: ``python tests/kube/crds/extract.py [../shared/kserve-crds]``; with
``--check`` only compare them with the upstream files (exit 1 on a difference). Not a test: a clone has no upstream
files, and the tests validate against the vendored schemas.

Each ``<plural>.<group>_<version>.json.gz`` is one ``spec.versions[].schema.openAPIV3Schema`` copied unchanged from
the upstream CRD YAML files in ``kserve-crds/`` (see that folder's README for their commits).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[3] / "shared" / "kserve-crds"
WANTED = {  # CRD file -> versions the renderers emit
    "serving.kserve.io_servingruntimes.yaml": ["v1alpha1"],
    "serving.kserve.io_inferenceservices.yaml": ["v1beta1"],
    "serving.kserve.io_inferencegraphs.yaml": ["v1alpha1"],
    "serving.kserve.io_llminferenceservices.yaml": ["v1alpha2"],
    "inference.networking.k8s.io_inferencepools.yaml": ["v1"],
    "gateway.networking.k8s.io_httproutes.yaml": ["v1"],
    "gateway.networking.k8s.io_gateways.yaml": ["v1"],
}


def extract(source: Path) -> dict[str, dict]:
    """``<group>/<version>/<Kind>`` -> openAPIV3Schema, read from the CRD files in ``source``."""
    out = {}
    for fname, versions in WANTED.items():
        crd = yaml.load((source / fname).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            if v["name"] in versions:
                out[f"{group}/{v['name']}/{kind}"] = v["schema"]["openAPIV3Schema"]
    return out


def file_for(key: str) -> Path:
    return HERE / (key.replace("/", "_") + ".json.gz")


def check(source: Path = DEFAULT_SOURCE) -> list[str]:
    """Keys whose vendored schema differs from the one in the upstream CRD files."""
    return [key for key, schema in extract(source).items()
            if json.loads(gzip.decompress(file_for(key).read_bytes())) != schema]


def main(source: Path = DEFAULT_SOURCE) -> None:
    for key, schema in extract(source).items():
        data = json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()
        file_for(key).write_bytes(gzip.compress(data, mtime=0))
        print(key, len(data), "->", file_for(key).stat().st_size)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--check"]
    src = Path(args[0]) if args else DEFAULT_SOURCE
    if "--check" in sys.argv[1:]:
        differ = check(src)
        print("vendored schemas differ from upstream: " + ", ".join(differ) if differ else "vendored schemas match")
        sys.exit(1 if differ else 0)
    main(src)
