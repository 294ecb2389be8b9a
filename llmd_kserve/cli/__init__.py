"""`llmd-kserve …`: the one command-line entry point; the only module that reads flags and the environment.

Each subcommand has an ``add_<name>`` (its flags) and a ``_cmd_<name>`` in ``cli.serve`` (processes that run until
stopped), ``cli.tasks`` (one-shot jobs), ``cli.plan`` (capacity planning) or ``cli.vllm`` (the vLLM environment and the tiny model); ``_cmd_<name>`` parses nothing itself: it imports the module that does the
work lazily (so ``llmd-kserve --help`` stays fast) and calls it with typed options built field by field.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from llmd_kserve import __version__
from llmd_kserve.cli import plan, serve, tasks, vllm
from llmd_kserve.cli.calibrate import add_calibrate
from llmd_kserve.errors import LlmdError

log = logging.getLogger(__name__)

_SUBCOMMANDS = [*serve.SUBCOMMANDS, *tasks.SUBCOMMANDS, *plan.SUBCOMMANDS, *vllm.SUBCOMMANDS, add_calibrate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmd-kserve", description="llm-d's KV-cache-aware routing and "
                                     "prefill/decode disaggregation for KServe and Kubeflow")
    parser.add_argument("--version", action="version", version=f"llmd-kserve {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = os.environ.get("LLMD_LOG_LEVEL") or ("DEBUG" if args.verbose > 1 else "INFO" if args.verbose else "WARNING")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (LlmdError, OSError) as exc:  # OSError: a file or directory we could not read or write
        log.debug("%s failed", args.command, exc_info=True)
        message = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"llmd-kserve {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
