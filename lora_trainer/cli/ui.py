"""`python -m lora_trainer ui [--root DIR] [--port N] [--listen --auth USER:PASSWORD]`: the standalone studio."""

from __future__ import annotations

NAME = "ui"
HELP = "start the standalone studio in the browser"


def add_arguments(parser) -> None:
    from ._common import add_root_argument, add_serve_arguments

    add_root_argument(parser)
    add_serve_arguments(parser)


def run(args) -> int:
    from ._common import root_of, serve_studio

    return serve_studio(args, root_of(args))
