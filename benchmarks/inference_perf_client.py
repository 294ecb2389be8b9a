"""inference-perf (kubernetes-sigs' load generator) drives the router of a local stack; its reports are read back.

    python benchmarks/inference_perf_client.py --inference-perf /path/to/venv312/bin/inference-perf --out DIR

inference-perf needs Python >= 3.12, so it runs from its own environment (``python3.12 -m venv v && v/bin/pip
install inference-perf``); this script needs only its executable. It starts a local stack of simulated engines,
writes an inference-perf config (shared-prefix data, a constant-rate stage, the router as a vLLM server, an offline
word-level tokenizer whose words are one token each for the simulated engines), runs it, and prints the run as our
loader reads it from the Benchmark Report inference-perf writes (``inference-perf.partial.stage_0.yaml``). With
``llmd-benchmark-report`` installed, the native ``stage_0_lifecycle_metrics.json`` is converted and validated too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from llmd_kserve.bench.workloads import WORDS
from llmd_kserve.stack import LocalStack
from llmd_kserve.viz.sources.benchmark_report import load_benchmark_reports


def word_tokenizer(path: Path) -> Path:
    """A Hugging Face word-level tokenizer over the bench's words (each one token for the simulated engines)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    path.mkdir(parents=True, exist_ok=True)
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]", "model_max_length": 1 << 20}))
    return path


def config(router_url: str, model: str, tokenizer: Path, out: Path, rate: float, duration: float) -> dict:
    """An inference-perf config: shared-prefix prompts at a constant rate, streamed completions, reports in ``out``."""
    return {
        "api": {"type": "completion", "streaming": True},
        "data": {"type": "shared_prefix", "shared_prefix": {"num_groups": 4, "num_prompts_per_group": 8,
                                                            "system_prompt_len": 512, "question_len": 32,
                                                            "output_len": 16}},
        "load": {"type": "constant", "stages": [{"rate": rate, "duration": duration}], "num_workers": 2},
        "server": {"type": "vllm", "model_name": model, "base_url": router_url, "ignore_eos": True},
        "tokenizer": {"pretrained_model_name_or_path": str(tokenizer)},
        "storage": {"local_storage": {"path": str(out)}},
        "report": {"request_lifecycle": {"summary": True, "per_stage": True, "per_request": False,
                                         "use_server_output_tokens": True},
                   "prometheus": None},
    }


def run(exe: str, out: Path, engines: int = 2, rate: float = 4.0, duration: float = 8.0,
        timeout: float = 300.0) -> list[Path]:
    """Start a stack, run inference-perf against its router; the report files it wrote."""
    out.mkdir(parents=True, exist_ok=True)
    tok = word_tokenizer(out / "tokenizer")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(out / "hf")}
    env.pop("PYTHONPATH", None)  # its own interpreter and packages
    with LocalStack(engines=engines, prometheus=False) as stack:
        cfg = out / "inference-perf.yaml"
        cfg.write_text(yaml.safe_dump(config(stack.router_url, _model(stack.router_url), tok, out / "reports",
                                             rate, duration)))
        proc = subprocess.run([exe, "-c", str(cfg)], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"inference-perf failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return sorted(p for p in (out / "reports").rglob("*") if p.is_file())


def _model(router_url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{router_url}/v1/models", timeout=10) as resp:
        return str(json.loads(resp.read())["data"][0]["id"])


def convert_native(lifecycle_json: Path, target: Path) -> Path | None:
    """inference-perf's native stage report as a full Benchmark Report (needs ``llmd-benchmark-report``)."""
    try:
        from llmd_benchmark_report.native_to_br0_2 import import_inference_perf
    except ImportError:
        return None
    br = import_inference_perf(str(lifecycle_json))
    br.export_yaml(str(target))
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inference-perf", required=True, help="the inference-perf executable (a Python 3.12 env)")
    ap.add_argument("--out", type=Path, required=True, help="directory for its config, tokenizer and reports")
    ap.add_argument("--engines", type=int, default=2)
    ap.add_argument("--rate", type=float, default=4.0, help="requests per second")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds")
    a = ap.parse_args(argv)
    files = run(a.inference_perf, a.out, a.engines, a.rate, a.duration)
    for f in files:
        print(f"wrote {f}")
    partials = [f for f in files if f.name.startswith("inference-perf.partial.stage_")]
    natives = [f for f in files if f.name.startswith("stage_") and f.name.endswith("_lifecycle_metrics.json")]
    converted = [c for f in natives if (c := convert_native(f, a.out / f"{f.stem}.br.yaml")) is not None]
    for point in load_benchmark_reports(*partials, *converted):
        print(f"{point.label}: n={point.n} errors={point.errors} TTFT p50={point.ttft.p50} TPOT p50={point.tpot.p50} "
              f"E2E p50={point.e2e.p50} req/s={point.throughput_rps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
