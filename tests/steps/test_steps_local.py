"""steps.local / steps.cluster with target "local": a detached stack that outlives its starter, found by state file."""

from __future__ import annotations

import json
import urllib.request

import pytest

from llmd_kserve.errors import LlmdError
from llmd_kserve.steps import deploy, teardown, wait_ready
from llmd_kserve.steps.local import alive, state_path


def test_state_path_is_per_run(tmp_path):
    assert state_path(str(tmp_path), "run/1") == tmp_path / "llmd-stack-run-1.json"
    assert state_path(str(tmp_path), "a") != state_path(str(tmp_path), "b")


@pytest.mark.slow
def test_deploy_wait_teardown_on_the_local_stack(tmp_path):
    handle = deploy("local", engines=1, num_blocks=512, state_dir=str(tmp_path), run_id="t1")
    try:
        assert handle["target"] == "local" and len(handle["pids"]) == 3  # up, one engine, the router
        assert alive(handle["pids"]) == handle["pids"]
        with pytest.raises(LlmdError, match="already running"):
            deploy("local", engines=1, state_dir=str(tmp_path), run_id="t1")
        ready = wait_ready(json.loads(json.dumps(handle)), timeout=60)
        with urllib.request.urlopen(ready["router_url"] + "/v1/models", timeout=5) as resp:
            assert json.loads(resp.read())["data"]
    finally:
        removed = teardown("local", state_dir=str(tmp_path), run_id="t1")
    assert sorted(removed) == sorted(f"pid/{p}" for p in handle["pids"])
    assert alive(handle["pids"]) == []
    assert teardown("local", state_dir=str(tmp_path), run_id="t1") == []  # idempotent
