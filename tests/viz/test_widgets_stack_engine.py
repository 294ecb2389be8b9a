"""StackPanel's engine choice: the same ``engine="sim"|"vllm"`` as LocalStack; a missing vLLM env is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")

from llmd_kserve.errors import LlmdError  # noqa: E402
from llmd_kserve.viz.widgets import StackPanel  # noqa: E402


def test_engine_choice_reaches_the_stack_settings(tmp_path: Path) -> None:
    panel = StackPanel(engines=1, prometheus=False)
    assert panel.settings().engine == "sim"
    vllm = StackPanel(engine="vllm", engines=1, prometheus=False, vllm_python=str(tmp_path / "python"),
                      kv_cache_tokens=4096)
    settings = vllm.settings()
    assert (settings.engine, settings.kv_cache_tokens, settings.vllm_python) == ("vllm", 4096,
                                                                                 str(tmp_path / "python"))
    vllm.engine.value = "sim"
    assert vllm.settings().engine == "sim"
    with pytest.raises(LlmdError, match="engine must be sim or vllm"):
        StackPanel(engine="tgi")


def test_missing_vllm_env_is_one_line_and_nothing_runs(tmp_path: Path) -> None:
    panel = StackPanel(engine="vllm", engines=1, prometheus=False, vllm_python=str(tmp_path / "python"))
    panel.start()
    assert panel.status.kind == "error" and panel.stack is None
    assert "llmd-kserve vllm install" in panel.status.text and "\n" not in panel.status.text
    assert not panel.start_button.disabled
