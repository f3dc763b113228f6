"""`python -m lora_trainer ui [--root DIR] [--port N] [--listen]`: the standalone studio."""

from __future__ import annotations

NAME = "ui"
HELP = "start the standalone studio in the browser"


def add_arguments(parser) -> None:
    from ._common import add_root_argument

    add_root_argument(parser)
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--enable-insecure-extension-access", dest="insecure", action="store_true",
                        help="with --listen: let the 'any folder' setting work (as the WebUI's flag of that name)")
    parser.add_argument("--listen", action="store_true", help="serve to other computers too (paths outside the studio stay disabled)")


def run(args) -> int:
    from ..ui.context import StudioContext
    from ..ui.standalone import serve
    from ._common import root_of

    ctx = StudioContext.for_root(root_of(args), remote=args.listen and not args.insecure)
    serve(ctx, port=args.port, listen=args.listen)
    return 0
