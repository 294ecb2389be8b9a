"""A third-party benchmark client (guidellm) drives the router over simulated engines: OpenAI compatibility."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytest.importorskip("guidellm", reason="guidellm not installed (dev extra)")
pytest.importorskip("llmd_kserve.engine_sim.server", reason="simulated engine server not available")

from llmd_kserve.bench.workloads import SharedPrefixSpec, build_requests  # noqa: E402
from llmd_kserve.stack import LocalStack  # noqa: E402

pytestmark = pytest.mark.slow
N = 16


def _offline_tokenizer(path: Path) -> Path:
    """A word-level HF tokenizer on disk so guidellm needs no download (it counts tokens only as a fallback)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    path.mkdir()
    tok = Tokenizer(models.WordLevel(vocab={"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]", "model_max_length": 1 << 20}))
    return path


def test_guidellm_drives_the_router(tmp_path):
    reqs = build_requests(SharedPrefixSpec(num_groups=2, prompts_per_group=N // 2, system_prompt_len=256,
                                           question_len=32, output_len=8), random.Random(0))
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": r.prompt, "prompt_tokens_count": r.prompt_tokens,
                                        "output_tokens_count": r.max_tokens}) + "\n" for r in reqs))
    out = tmp_path / "guidellm.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "GUIDELLM__MAX_WORKER_PROCESSES": "2"}
    exe = shutil.which("guidellm", path=str(Path(sys.executable).parent)) or "guidellm"
    with LocalStack(engines=2, prometheus=False) as stack:
        proc = subprocess.run(
            [exe, "benchmark", "run", "--target", stack.router_url, "--data", str(data),
             "--processor", str(_offline_tokenizer(tmp_path / "tok")), "--rate-type", "constant", "--rate", "8",
             "--max-requests", str(N), "--output-path", str(out), "--disable-progress", "--random-seed", "0"],
            env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        with urllib.request.urlopen(f"{stack.router_url}/metrics", timeout=10) as resp:
            families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
        decisions = families["llmd_router_decisions"].samples
        assert sum(s.value for s in decisions if s.name.endswith("_total")) >= N  # the router scheduled them all
        assert {s.labels["endpoint"] for s in decisions} <= {u.rstrip("/") for u in stack.engine_base_urls}
    report = json.loads(out.read_text())
    bench = report["benchmarks"][0]
    totals = bench["request_totals"]
    assert totals["successful"] == N and totals["errored"] == 0, totals
    ok = bench["requests"]["successful"]
    assert all(r["output_tokens"] == 8 for r in ok)
    assert all(r["prompt_tokens"] == 288 for r in ok)  # usage from our engines, same SimTokenizer counts
    assert all(r["first_token_time"] is not None and r["first_token_time"] >= r["start_time"] for r in ok)
