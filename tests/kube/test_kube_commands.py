"""The commands the manifests run in our image parse with the project's own CLI (``llmd-kserve …``)."""

from __future__ import annotations

import pytest

from llmd_kserve.cli import build_parser
from llmd_kserve.kube.pools import pool_isvc
from llmd_kserve.kube.router import router_args
from llmd_kserve.kube.runtime import sim_command
from llmd_kserve.kube.spec import DeploymentSpec


def parser_flags(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {opt for action in sub.choices[command]._actions for opt in action.option_strings}


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_sim_engine_command_parses(role):
    spec = DeploymentSpec(mode="sim")
    command, args = sim_command(spec)
    assert command == ["llmd-kserve"]
    args = args + pool_isvc(spec, role)["spec"]["predictor"]["model"]["args"]  # KServe appends the pool's args
    ns = build_parser().parse_args(args)
    assert (ns.command, ns.role, ns.port, ns.block_size) == ("engine", role, 8000, 16)
    assert ns.kv_events_endpoint == "tcp://*:5557" and ns.kv_events_topic == "kv@$(POD_IP):8000@llama-3.1-8b"


def test_router_command_parses():
    assert {"--discover-selector", "--discover-namespace"} <= set(parser_flags("router"))
    for mode in ("sim", "pd"):
        ns = build_parser().parse_args(router_args(DeploymentSpec(mode=mode)))
        assert ns.command == "router" and ns.config == "/etc/llmd/config.yaml"
