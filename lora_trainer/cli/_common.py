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
