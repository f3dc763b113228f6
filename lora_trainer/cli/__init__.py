"""The command line: `python -m lora_trainer <command> ...`.

Each command is one module in this package that defines

    NAME = "train"                      # the subcommand
    HELP = "train a LoRA ..."           # one line for --help
    def add_arguments(parser): ...      # its flags
    def run(args) -> int: ...           # does the work; heavy imports (torch, gradio) go in here

Modules whose name starts with "_" are helpers, not commands. Commands are found by listing this
package, so adding one never touches a shared file. A `StudioError` is printed as a sentence with
its fix and exit code 2; a `Cancelled` (Ctrl-C) exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from ..errors import Cancelled, StudioError


def _command_modules():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lora_trainer",
        description="LoRA Studio: make a dataset, train a LoRA or LoCon, compare its epochs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in sorted(_command_modules(), key=lambda m: m.NAME):
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except StudioError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.fix:
            print(f"  fix: {e.fix}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("cancelled", file=sys.stderr)
        return 130
