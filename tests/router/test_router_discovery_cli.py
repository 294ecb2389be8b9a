"""`llmd-kserve router --discover-selector` without a cluster fails with one clear line, not a traceback."""

import os
import subprocess
import sys


def test_discovery_without_a_cluster_is_a_one_line_error(tmp_path):
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    proc = subprocess.run(
        [sys.executable, "-m", "llmd_kserve.cli", "router", "--host", "127.0.0.1", "--port", "0",
         "--discover-selector", "app=llmd-engine", "--discover-namespace", "default"],
        env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("llmd-kserve router: error: no Kubernetes cluster")
