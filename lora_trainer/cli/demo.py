"""`python -m lora_trainer demo [--root DIR] [--port N] [--no-ui]`: a demo project, then the studio."""

from __future__ import annotations

NAME = "demo"
HELP = "create the demo project (synthetic images with captions) and start the studio on it"

DEMO_PROJECT = "demo"


def add_arguments(parser) -> None:
    parser.add_argument("--root", help="studio root folder (default: $LORA_STUDIO_ROOT or ./studio)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--enable-insecure-extension-access", dest="insecure", action="store_true",
                        help="with --listen: let the 'any folder' setting work (as the WebUI's flag of that name)")
    parser.add_argument("--listen", action="store_true")
    parser.add_argument("--no-ui", action="store_true", help="only create the demo project")


def ensure_demo_project(root):
    """Create the demo project once; later calls leave the user's edits alone."""
    from ..demo.dataset import make_demo_dataset
    from ..project import create_project, list_projects, open_project

    if DEMO_PROJECT in list_projects(root):
        return open_project(root, DEMO_PROJECT)
    project = create_project(root, DEMO_PROJECT)
    make_demo_dataset(project.dataset_dir)
    return project


def run(args) -> int:
    from pathlib import Path

    from ..project import default_root

    root = Path(args.root) if args.root else default_root()
    project = ensure_demo_project(root)
    print(f"Demo project ready: {project.dir}")
    if args.no_ui:
        return 0
    from ..ui.context import StudioContext
    from ..ui.standalone import serve

    serve(StudioContext.for_root(root, remote=args.listen and not args.insecure), port=args.port, listen=args.listen)
    return 0
