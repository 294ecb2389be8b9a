"""The image the manifests reference, and the vendored CRD schemas the validation tests use."""

from __future__ import annotations

import gzip
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest

from llmd_kserve import __version__
from llmd_kserve.kube.spec import DeploymentSpec

ROOT = Path(__file__).resolve().parents[2]
SHARED_CRDS = ROOT.parent / "shared" / "kserve-crds"


def test_dockerfile_entrypoint_and_inputs():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["llmd-kserve"\]$', text, re.M)
    for src in re.findall(r"^COPY (?!--)(.+) \S+$", text, re.M):
        for path in src.split():
            assert (ROOT / path).exists(), path
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "kube" in extras and "kubernetes" in " ".join(extras["kube"])  # discovery runs in the router image
    assert DeploymentSpec().images.llmd.endswith(f":{__version__}")
    assert DeploymentSpec().images.llmd.split(":")[0] in text


@pytest.mark.skipif(not SHARED_CRDS.is_dir(), reason=f"upstream CRD files not present at {SHARED_CRDS}")
def test_vendored_schemas_are_the_upstream_ones():
    sys.path.insert(0, str(Path(__file__).parent / "crds"))
    try:
        import extract
    finally:
        sys.path.pop(0)
    for key, schema in extract.extract(SHARED_CRDS).items():
        assert json.loads(gzip.decompress(extract.file_for(key).read_bytes())) == schema, key
