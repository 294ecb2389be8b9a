"""Every CLI failure is one line on stderr (``llmd-kserve <cmd>: error: ...``), exit code 2, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from llmd_kserve.stack.procs import free_port


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmd_kserve.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={"PATH": "/usr/bin:/bin", "LLMD_LOG_LEVEL": "ERROR"})


def _assert_one_line_error(res: subprocess.CompletedProcess, command: str, *fragments: str) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"llmd-kserve {command}: error: "), lines[0]
    for f in fragments:
        assert f in lines[0]


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    return free_port()  # nothing listens there


def _files(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("foo: [\n")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("plugins: 5\n")
    trace = tmp_path / "trace.jsonl"
    trace.write_text('{"timestamp": 1}\n')
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    return bad_yaml, mapping, trace, a_file


CASES = [  # (command args with {placeholders}, fragments expected in the error line)
    (["engine", "--port", "0", "--num-blocks", "-5"], ["num_blocks", ">= 1"]),
    (["engine", "--port", "0", "--error-rate", "2"], ["error_rate"]),
    (["engine", "--port", "0", "--kv-events-endpoint", "garbage"], ["kv_events_endpoint", "garbage"]),
    (["engine", "--port", "0", "--profile", "{bad_yaml}"], ["cannot read latency profile"]),
    (["engine", "--host", "127.0.0.1", "--port", "{busy_port}"], ["cannot listen"]),
    (["router", "--port", "0", "--config", "nosuch", "--endpoints", "http://127.0.0.1:1"], ["nosuch"]),
    (["router", "--port", "0", "--config", "{bad_yaml}", "--endpoints", "http://127.0.0.1:1"], ["invalid YAML"]),
    (["router", "--port", "0", "--endpoints", "http://h:99999"], ["bad port"]),
    (["router", "--port", "0", "--endpoints", "notaurl"], ["http(s)://host:port"]),
    (["router", "--port", "0", "--endpoints-file", "{tmp}/missing.yaml"], ["cannot read endpoints file"]),
    (["router", "--port", "0", "--endpoints-file", "{mapping}"], ["expected a list of endpoints"]),
    (["router", "--port", "0", "--endpoints-file", "{bad_yaml}"], ["cannot parse endpoints file"]),
    (["router", "--port", "0", "--api-keys-file", "{tmp}/missing", "--endpoints", "http://127.0.0.1:1"],
     ["API keys file"]),
    (["router", "--port", "0", "--tokenizer", "{tmp}/missing.json", "--endpoints", "http://127.0.0.1:1"],
     ["tokenizer"]),
    (["router", "--port", "0", "--scrape-interval", "-1", "--endpoints", "http://127.0.0.1:1"], ["scrape_interval"]),
    (["router", "--host", "127.0.0.1", "--port", "{busy_port}", "--endpoints", "http://127.0.0.1:1"],
     ["cannot listen"]),
    (["bench", "--target", "http://127.0.0.1:{closed_port}", "--num-requests", "2", "--no-progress"],
     ["cannot reach target"]),
    (["bench", "--sim", "--num-requests", "2", "--json", "{tmp}/no/such/dir/x.json"], ["json", "does not exist"]),
    (["bench", "--sim", "--num-requests", "2", "--html", "{tmp}"], ["html", "directory"]),
    (["bench", "--target", "http://127.0.0.1:1", "--set", "nosuch_field=1"], ["nosuch_field"]),
    (["bench", "--target", "http://127.0.0.1:1", "--workload", "trace", "--trace", "{trace}"],
     ["bad trace line", "input_length"]),
    (["bench", "--trace", "{trace}", "--window", "5"], ["window", "START:END"]),
    (["bench", "--describe"], ["--describe needs --trace"]),
    (["bench", "--sim", "--report-format", "llmd-br"], ["report-format", "--json"]),
    (["bench", "--target", "http://127.0.0.1:1", "--profile", "cpu-tiny-llama"], ["profile", "needs --sim"]),
    (["bench", "--sim", "--num-requests", "2", "--profile", "nosuch"], ["no such latency profile", "cpu-tiny-llama"]),
    (["up", "--prefill", "1", "--no-prometheus"], ["--prefill and --decode"]),
    (["up", "--no-prometheus", "--port", "0", "--profile", "nosuch"], ["no such latency profile"]),
    (["up", "--host", "127.0.0.1", "--port", "{busy_port}", "--no-prometheus"], ["cannot listen"]),
    (["up", "--log-dir", "{a_file}/logs", "--no-prometheus", "--port", "0"], ["log directory"]),
    (["up", "--engines", "1", "--no-prometheus", "--port", "0", "--engine-arg=--num-blocks=-5"],
     ["engine-0-both", "num_blocks"]),
    (["render", "--out", "{a_file}/out"], []),
    (["render", "--out", "{tmp}/out", "--spec", "{bad_yaml}"], ["deployment spec"]),
    (["demo", "--json", "{tmp}/no/such/dir/x.json", "--no-live", "--no-sim"], ["does not exist"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, fragments", CASES, ids=[" ".join(a[:3]) for a, _ in CASES])
def test_failures_are_one_line_exit_2(tmp_path, busy_port, closed_port, args, fragments):
    bad_yaml, mapping, trace, a_file = _files(tmp_path)
    subs = {"tmp": tmp_path, "bad_yaml": bad_yaml, "mapping": mapping, "trace": trace, "a_file": a_file,
            "busy_port": busy_port, "closed_port": closed_port}
    res = _cli(*(a.format(**subs) for a in args))
    _assert_one_line_error(res, args[0], *fragments)


@pytest.mark.parametrize("args, flag", [(["engine", "--port", "70000"], "--port"),
                                        (["bench", "--concurrency", "0"], "--concurrency"),
                                        (["bench", "--timeout", "-1"], "--timeout"),
                                        (["bench", "--sweep", "1,x"], "--sweep")])
def test_bad_flag_values_are_usage_errors(args, flag):
    res = _cli(*args)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"argument {flag}:" in res.stderr.splitlines()[-1]


def test_cli_defaults_are_the_named_ones() -> None:
    """Flags default to ``llmd_kserve.defaults``; the workload choices are the WorkloadSpec union's tags."""
    from typing import get_args

    from llmd_kserve import defaults
    from llmd_kserve.bench.workloads import WorkloadSpec
    from llmd_kserve.cli import build_parser
    from llmd_kserve.config.loader import shipped_configs

    union = get_args(WorkloadSpec)[0]
    assert tuple(get_args(cls.model_fields["kind"].annotation)[0] for cls in get_args(union)) == defaults.WORKLOAD_KINDS
    assert shipped_configs() == defaults.SHIPPED_CONFIGS + defaults.PD_SHIPPED_CONFIGS
    parser = build_parser()
    router = parser.parse_args(["router", "--endpoints", "http://a:1"])
    assert (router.scrape_interval, router.profile, router.config, router.port) == (
        defaults.SCRAPE_INTERVAL_S, defaults.DEFAULT_PROFILE, defaults.DEFAULT_CONFIG, defaults.ROUTER_PORT)
    engine = parser.parse_args(["engine"])
    assert (engine.model, engine.profile, engine.port) == (
        defaults.DEFAULT_MODEL, defaults.DEFAULT_PROFILE, defaults.ENGINE_PORT)


def test_http_error_tree() -> None:
    """Each HTTP error class fixes its status and OpenAI type; one body shape for all."""
    from llmd_kserve import errors

    expected = {errors.BadRequest: (400, "BadRequestError"), errors.Unauthorized: (401, "AuthenticationError"),
                errors.NotFound: (404, "NotFoundError"), errors.UpstreamFailed: (502, "BadGatewayError"),
                errors.NoEndpoint: (503, "ServiceUnavailableError")}
    for cls, (status, type_) in expected.items():
        exc = cls("boom", "p")
        assert isinstance(exc, errors.HTTPError) and isinstance(exc, errors.LlmdError)
        assert exc.body() == {"error": {"message": "boom", "type": type_, "param": "p", "code": status}}
    assert errors.InvalidRequestError is errors.BadRequest
    assert errors.error_path(("a", 0, "b"), "f.yaml:") == "f.yaml:a[0].b" and errors.error_path((), "f.yaml:") == "f.yaml"
