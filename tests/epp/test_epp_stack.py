"""``llmd-kserve up --gateway envoy``: engines, the EPP process and a real Envoy, as processes on this machine."""

from __future__ import annotations

import httpx
import pytest

from llmd_kserve.errors import ConfigError
from llmd_kserve.stack.local import LocalStack
from tests.epp.gateway import require_envoy

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["headers", "none"])
def test_local_stack_behind_envoy(mode):
    require_envoy()
    with LocalStack(engines=2, gateway="envoy", response_mode=mode, fail_open=True, prometheus=False,
                    time_scale=0.05) as stack:
        names = [p.name for p in stack._procs]
        assert names == ["engine-0-both", "engine-1-both", "epp", "envoy"]
        with httpx.Client(base_url=stack.router_url, timeout=30) as c:
            seen = set()
            for i in range(4):
                r = c.post("/v1/completions", json={"prompt": f"hello {i} " * 20, "max_tokens": 2})
                assert r.status_code == 200 and r.headers["server"] == "envoy"
                seen.add(r.headers["x-llmd-endpoint"])
            assert seen <= set(stack.engine_base_urls) and seen
        assert stack.check() == []


def test_unknown_gateway_is_a_config_error():
    with pytest.raises(ConfigError, match="gateway"):
        LocalStack(engines=1, gateway="nginx", prometheus=False).start()
