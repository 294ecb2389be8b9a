"""Regenerate the vendored CRD schemas: ``python tests/kube/crds/extract.py [../shared/kserve-crds]``.

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


def main(source: Path = DEFAULT_SOURCE) -> None:
    for key, schema in extract(source).items():
        data = json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()
        file_for(key).write_bytes(gzip.compress(data, mtime=0))
        print(key, len(data), "->", file_for(key).stat().st_size)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE)
