"""`python -m lora_trainer import SRC... --project NAME`: bring folders, zips or images into a dataset."""

from __future__ import annotations

import argparse

NAME = "import"
HELP = "import images (folders, zips, files) with their captions into a project's dataset, checking each"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_project_arguments

    parser.add_argument("sources", nargs="+", metavar="SRC", help="a folder, a .zip, or image files")
    add_project_arguments(parser, create_if_missing=True)
    parser.add_argument("--shrink", type=int, default=None, metavar="PX", help="scale imported images down to this longer side; originals go to the trash")
    parser.add_argument("--to-jpeg", action="store_true", help="with --shrink: also store PNG/WebP as JPEG (transparency flattened onto white)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality for --to-jpeg (default 95)")
    parser.add_argument("--trash-others", action="store_true", help="move files in the dataset folder that are not images or captions to the trash")


def run(args: argparse.Namespace) -> int:
    from ..dataset.importer import ImportOptions, ShrinkOptions, import_into_dataset
    from ..errors import StudioError
    from ._common import project_of
    from ._console import ConsoleProgress

    if args.to_jpeg and args.shrink is None:
        raise StudioError("--to-jpeg works together with --shrink.", "Add --shrink PX (e.g. --shrink 2048).")
    project = project_of(args, create_if_missing=True)
    shrink = ShrinkOptions(args.shrink, args.to_jpeg, args.quality) if args.shrink is not None else None
    options = ImportOptions(trash_others=args.trash_others, shrink=shrink)
    summary = import_into_dataset(args.sources, project.dataset_dir, project.dir, options, progress=ConsoleProgress())
    for line in summary.lines():
        print(line)
    return 0 if summary.imported or summary.already_present else 1
