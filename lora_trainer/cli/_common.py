"""Flags and look-ups that many commands share: which studio root, which project."""

from __future__ import annotations

from pathlib import Path

ROOT_HELP = "studio root folder (default: $LORA_STUDIO_ROOT or ./studio)"


def add_root_argument(parser) -> None:
    parser.add_argument("--root", default=None, help=ROOT_HELP)


def add_project_arguments(parser, create_if_missing: bool = False) -> None:
    """--project NAME (required) and --root DIR."""
    note = "created if it does not exist" if create_if_missing else "a folder under the root"
    parser.add_argument("--project", required=True, help=f"project name ({note})")
    add_root_argument(parser)


def root_of(args) -> Path:
    from ..project import default_root

    return Path(args.root) if getattr(args, "root", None) else default_root()


def project_of(args, create_if_missing: bool = False):
    """The Project named by --project under --root; optionally created (import, scrape)."""
    from ..errors import StudioError
    from ..project import create_project, open_project

    root = root_of(args)
    try:
        return open_project(root, args.project)
    except StudioError:
        if not create_if_missing:
            raise
    project = create_project(root, args.project)
    print(f"Created project {project.name!r} in {project.root}.")
    return project


def add_caption_writing_arguments(parser, batch_help: str) -> None:
    """--mode and --batch of the commands that write caption files (tag, caption)."""
    parser.add_argument("--mode", choices=["overwrite", "append", "skip"], default="overwrite",
                        help="existing captions")
    parser.add_argument("--batch", type=int, default=8, help=f"{batch_help} (default 8)")


def print_caption_writes(verb: str, images: int, write, failed) -> None:
    """What a tagging or captioning run wrote (a CaptionWriteResult), what it could not read, and
    where the previous captions went."""
    print(f"{verb} {images} images: {write.written} caption files written, {write.unchanged} unchanged, "
          f"{write.skipped} skipped.")
    if failed:
        print(f"Could not read {len(failed)} images: {', '.join(failed[:10])}")
    if write.trash_batch:
        print(f"Previous captions kept in the trash, batch {write.trash_batch}.")


def add_serve_arguments(parser) -> None:
    """How the standalone studio is served: port, --listen and who may open it."""
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--listen", action="store_true",
                        help="serve to other computers too; needs --auth or --auth-file (paths outside the studio stay disabled)")
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD",
                        help="sign-in for the page, as the WebUI's --gradio-auth (several separated by commas)")
    parser.add_argument("--auth-file", default=None, metavar="FILE",
                        help="a file of user:password lines, as the WebUI's --gradio-auth-path")
    parser.add_argument("--insecure-open", action="store_true",
                        help="with --listen: serve without a password (only on a network that is yours alone)")
    parser.add_argument("--enable-insecure-extension-access", dest="insecure", action="store_true",
                        help="with --listen: let the 'any folder' setting work (as the WebUI's flag of that name)")


def serve_access(args):
    """The ServeAccess the serve arguments ask for (a StudioError when open to the network)."""
    from ..logins import ServeAccess

    return ServeAccess.decide(args.listen, args.auth, args.auth_file, args.insecure_open)


def serve_studio(args, root: Path, access=None) -> int:
    """Start the standalone studio on `root` as the serve arguments ask (`access` if already decided)."""
    from ..ui.context import StudioContext
    from ..ui.standalone import serve

    access = access or serve_access(args)
    serve(StudioContext.for_root(root, remote=args.listen and not args.insecure), port=args.port, access=access)
    return 0
