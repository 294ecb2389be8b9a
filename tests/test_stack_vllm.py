"""The vLLM replica launcher without vLLM: its command line, environment, KV-cache sizing, cores, memory check, the
one-line cause it reads from a failed start, and `up --engine vllm`'s errors before anything starts."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from llmd_kserve.errors import ConfigError, LlmdError
from llmd_kserve.stack import LocalStack
from llmd_kserve.stack.vllm import ModelInfo, VllmReplica, check_memory, replica_cores, startup_failure
from llmd_kserve.vllm_env import VllmEnvMissing

ROOT = Path(__file__).resolve().parents[1]


def _model(tmp_path: Path, **overrides: object) -> Path:
    cfg = {"num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 256,
           "max_position_embeddings": 16384, "torch_dtype": "bfloat16"} | overrides
    d = tmp_path / "my-model"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_model_info_sizes_the_kv_cache_from_the_config(tmp_path: Path) -> None:
    info = ModelInfo.load(_model(tmp_path))
    assert (info.name, info.max_positions, info.kv_bytes_per_token) == ("my-model", 16384, 2 * 4 * 2 * 64 * 2)
    wide = ModelInfo.load(_model(tmp_path, num_key_value_heads=None, head_dim=128, torch_dtype="float32"))
    assert wide.kv_bytes_per_token == 2 * 4 * 4 * 128 * 4
    nested = ModelInfo.load(_model(tmp_path, text_config={"num_hidden_layers": 2, "num_attention_heads": 8,
                                                          "hidden_size": 512, "max_position_embeddings": 4096}))
    assert (nested.kv_bytes_per_token, nested.max_positions) == (2 * 2 * 8 * 64 * 2, 4096)


@pytest.mark.parametrize(("files", "message"), [({}, "no config.json"), ({"config.json": "{"}, "cannot read"),
                                                ({"config.json": "{}"}, "lacks the attention shape")])
def test_model_info_errors_name_the_directory(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        ModelInfo.load(tmp_path)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_argv_and_env_of_a_cpu_replica(tmp_path: Path) -> None:
    r = VllmReplica(ModelInfo.load(_model(tmp_path)), port=8100, kv_port=5557, replay_port=5558, core=1, seed=3,
                    kv_cache_tokens=16384, extra_args=("--max-num-seqs", "8"))
    argv = r.argv("/venv/bin/python")
    assert argv[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert _flag(argv, "--model") == str(tmp_path / "my-model") and _flag(argv, "--served-model-name") == "my-model"
    assert (_flag(argv, "--port"), _flag(argv, "--block-size"), _flag(argv, "--seed")) == ("8100", "32", "3")
    assert _flag(argv, "--kv-cache-memory-bytes") == str(16384 * 2048)  # 32 MiB
    assert _flag(argv, "--max-model-len") == str(16384 - 32)  # vLLM keeps one block back
    for flag in ("--enable-prefix-caching", "--enable-prompt-tokens-details", "--enable-scale-out", "--enforce-eager"):
        assert flag in argv
    assert "--kv-transfer-config" not in argv and argv[-2:] == ["--max-num-seqs", "8"]
    assert json.loads(_flag(argv, "--kv-events-config")) == {
        "enable_kv_cache_events": True, "publisher": "zmq", "endpoint": "ipc://@llmd-kv-8100-5557",
        "replay_endpoint": "tcp://127.0.0.1:5558", "topic": "kv@127.0.0.1:8100@my-model"}
    # vLLM binds its PUB socket only to a wildcard or ipc address (it connects to any other): on loopback, ipc
    assert r.endpoint_spec == "http://127.0.0.1:8100#kv=ipc://@llmd-kv-8100-5557&replay=tcp://127.0.0.1:5558"
    lan = VllmReplica(ModelInfo.load(_model(tmp_path)), port=8100, kv_port=5557, replay_port=5558, host="10.1.2.3")
    assert json.loads(_flag(lan.argv("py"), "--kv-events-config"))["endpoint"] == "tcp://*:5557"
    assert lan.endpoint_spec == "http://10.1.2.3:8100#kv=tcp://10.1.2.3:5557&replay=tcp://10.1.2.3:5558"
    env = r.env({"PATH": "/bin", "PYTHONPATH": "/repo", "VLLM_CPU_KVCACHE_SPACE": "4", "HOME": "/root"})
    assert env["VLLM_SERVER_DEV_MODE"] == "1" and env["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1" and env["PATH"] == "/bin" and env["HOME"] == "/root"
    assert "PYTHONPATH" not in env and "VLLM_CPU_KVCACHE_SPACE" not in env


def test_pd_roles_carry_the_connector_and_the_role(tmp_path: Path) -> None:
    model = ModelInfo.load(_model(tmp_path))
    r = VllmReplica(model, port=1, kv_port=2, replay_port=3, role="prefill", side_channel_port=4)
    assert json.loads(_flag(r.argv("py"), "--kv-transfer-config")) == {"kv_connector": "NixlConnector",
                                                                       "kv_role": "kv_both"}
    env = r.env({})  # each replica its own NIXL handshake port (vLLM's default, 5600, would clash)
    assert (env["VLLM_NIXL_SIDE_CHANNEL_HOST"], env["VLLM_NIXL_SIDE_CHANNEL_PORT"]) == ("127.0.0.1", "4")
    assert "VLLM_NIXL_SIDE_CHANNEL_PORT" not in VllmReplica(model, 1, 2, 3, side_channel_port=4).env({})
    assert r.endpoint_spec.startswith("http://127.0.0.1:1#role=prefill&kv=ipc://@llmd-kv-1-2&replay=")
    gpu = VllmReplica(model, port=1, kv_port=2, replay_port=3, cpu=False, core=0, kv_cache_tokens=1000)
    assert "--block-size" not in gpu.argv("py") and "--enforce-eager" not in gpu.argv("py")
    assert "VLLM_CPU_OMP_THREADS_BIND" not in gpu.env({}) and gpu.max_model_len == 1000 - 16


def test_kv_cache_caps_the_context_and_too_small_is_refused(tmp_path: Path) -> None:
    model = ModelInfo.load(_model(tmp_path))
    assert VllmReplica(model, 1, 2, 3, kv_cache_tokens=4096).max_model_len == 4064
    assert VllmReplica(model, 1, 2, 3, kv_cache_tokens=10**6).max_model_len == 16384
    with pytest.raises(ConfigError, match="kv-cache-tokens: must be at least 64"):
        VllmReplica(model, 1, 2, 3, kv_cache_tokens=40).argv("py")


def test_a_core_each_while_cores_last() -> None:
    assert replica_cores(2, [0, 1]) == [0, 1]
    assert replica_cores(3, [4, 2]) == [2, 4, 2]
    assert replica_cores(1, [7]) == [7]


def test_memory_check_is_one_line() -> None:
    check_memory(2, 32 << 20, available=8 << 30)
    with pytest.raises(LlmdError, match=r"not enough memory for 4 vLLM replica\(s\)") as info:
        check_memory(4, 1 << 30, available=4 << 30)
    assert "\n" not in str(info.value)


ENGINE_CORE_LOG = """\
(APIServer pid=12561) INFO 12-07 14:39:31 [utils.py:233] non-default args: {'model': '/tmp/tiny'}
(EngineCore pid=12784) ERROR 12-07 14:39:50 [core.py:1510] EngineCore failed to start.
(EngineCore pid=12784) ERROR 12-07 14:39:50 [core.py:1510] Traceback (most recent call last):
(EngineCore pid=12784) ERROR 12-07 14:39:50 [core.py:1510]   File "vllm/v1/core/kv_cache_utils.py", line 1030, in _check
(EngineCore pid=12784) ERROR 12-07 14:39:50 [core.py:1510]     raise ValueError(
(EngineCore pid=12784) ERROR 12-07 14:39:50 [core.py:1510] ValueError: To serve at least one request with the model's \
max seq len (16384), (0.03 GiB KV cache is needed, which is larger than the available KV cache memory (0.03 GiB).
(EngineCore pid=12784) ERROR 12-07 14:39:54 [multiproc_executor.py:315] Worker proc VllmWorker-0 died unexpectedly
(APIServer pid=12561) Traceback (most recent call last):
(APIServer pid=12561)   File "vllm/v1/engine/utils.py", line 1431, in wait_for_engine_startup
(APIServer pid=12561) RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""

API_SERVER_LOG = """\
  File "transformers/tokenization_utils_tokenizers.py", line 412, in __init__
    raise ValueError(
ValueError: Couldn't instantiate the backend tokenizer from one of:
(1) a `tokenizers` library serialization file,
(2) a slow tokenizer instance to convert or
"""


def test_startup_failure_finds_the_root_cause() -> None:
    assert startup_failure(ENGINE_CORE_LOG).startswith("ValueError: To serve at least one request")
    assert startup_failure(API_SERVER_LOG) == ("ValueError: Couldn't instantiate the backend tokenizer from one of: "
                                               "(1) a `tokenizers` library serialization file, (2) a slow tokenizer "
                                               "instance to convert or")
    killed = ("(APIServer pid=1) ERROR 12-07 14:39:54 [core_client.py:600] Engine core proc EngineCore died "
              "unexpectedly, shutting down client.\nRuntimeError: Engine core initialization failed. Failed core "
              "proc(s): {'EngineCore': -9}\n")
    assert startup_failure(killed).endswith("(a process was killed: out of memory?)")
    assert startup_failure("INFO starting\nINFO still starting\n") == "INFO still starting"
    assert startup_failure("") == "(no output)"


def test_stack_without_vllm_env_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(VllmEnvMissing, match="llmd-kserve vllm install") as info:
        LocalStack(engine="vllm", engines=1, prometheus=False, vllm_python=str(tmp_path / "python"),
                   log_dir=str(tmp_path / "logs")).start()
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="engine: must be sim or vllm"):
        LocalStack(engine="tgi", prometheus=False, log_dir=str(tmp_path / "logs")).start()


def _up(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmd_kserve.cli", "up", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


def test_up_errors_are_one_line_before_anything_starts(tmp_path: Path) -> None:
    missing = _up("--engine", "vllm", "--port", "0", "--no-prometheus", "--vllm-python", str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "llmd-kserve vllm install" in missing.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = _up("--engine", "vllm", "--port", str(port), "--no-prometheus")
    assert taken.returncode == 2 and taken.stderr.count("\n") == 1
    assert f"port: cannot listen on 127.0.0.1:{port}" in taken.stderr
    stray = _up("--model", str(tmp_path), "--port", "0")
    assert stray.returncode == 2 and "need --engine vllm" in stray.stderr and stray.stderr.count("\n") == 1
