"""`python -m lora_trainer ui [--root DIR] [--port N] [--listen]`: the standalone studio."""

from __future__ import annotations

NAME = "ui"
HELP = "start the standalone studio in the browser"


def add_arguments(parser) -> None:
    parser.add_argument("--root", help="studio root folder (default: $LORA_STUDIO_ROOT or ./studio)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--enable-insecure-extension-access", dest="insecure", action="store_true",
                        help="with --listen: let the 'any folder' setting work (as the WebUI's flag of that name)")
    parser.add_argument("--listen", action="store_true", help="serve to other computers too (paths outside the studio stay disabled)")


def run(args) -> int:
    from pathlib import Path

    from ..project import default_root
    from ..ui.context import StudioContext
    from ..ui.standalone import serve

    ctx = StudioContext.for_root(Path(args.root) if args.root else default_root(), remote=args.listen and not args.insecure)
    serve(ctx, port=args.port, listen=args.listen)
    return 0
