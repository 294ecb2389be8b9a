"""The tuning panel with llm-d's optimized baseline: the affinity filter's fields, and *Calibrate* filling in the
peak prefill throughput it measures."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmd_kserve.bench.workloads import SharedPrefixSpec
from llmd_kserve.latency import load_profile
from llmd_kserve.viz.widgets import TunePanel

SMALL = SharedPrefixSpec(num_groups=4, prompts_per_group=10, system_prompt_len=1000, question_len=32, output_len=8)


def test_tune_panel_calibrates_the_affinity_filter(tmp_path: Path):
    tune = TunePanel("llm-d-optimized-baseline", workload=SMALL, rate=10, engines=2, auto=False)
    fields = [w.description for w in tune.params.values()]
    assert fields == ["prefix-cache-affinity-filter.affinityThreshold",
                      "prefix-cache-affinity-filter.peakPrefillThroughput"]
    assert tune.calibrate_button in tune.widget.children[0].children[1].children
    assert tune.calibrate_from.value == "sim:h100-llama8b"

    fast = load_profile("h100-llama8b").model_dump() | {"name": "fast", "max_num_batched_tokens": 2048}
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(fast))
    prof = load_profile(str(path))
    known = 2048 / prof.prefill_time(2048)
    peak = tune.calibrate(f"sim:{path}", warmup=1, measurements=3, time_scale=4.0)
    assert peak == pytest.approx(known, rel=0.10) and tune.status.kind == "ok"
    params = tune.config().plugins[2].parameters or {}
    assert params["peakPrefillThroughput"] == peak and params["affinityThreshold"] == 0.8
    base, tuned = tune.simulate()
    assert base.n == tuned.n == 40

    assert tune.calibrate("http://127.0.0.1:9") is None and "cannot reach" in tune.status.text
    assert TunePanel("default", workload=SMALL, auto=False).calibrate("sim:h100-llama8b") is None
