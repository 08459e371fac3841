"""The `hyplora` command: a thin argparse layer over the library.

Each subcommand lives in its own module under `hyplora.cli` with a ``register(subparsers)`` function
that adds its parser and sets ``func`` (a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import HypLoraUserError

# Modules under hyplora.cli that provide subcommands, in the order `--help` lists them.
COMMAND_MODULES = ["demo", "analyze", "train", "eval", "compare"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="hyplora",
        description="Hyperbolic low-rank fine-tuning (HypLoRA) of Hugging Face causal language models.",
    )
    parser.add_argument("--version", action="version", version=f"hyplora {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{module_name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HypLoraUserError as exc:
        print(f"hyplora {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hyplora {args.command}: interrupted", file=sys.stderr)
        return 130
