"""`python -m lora_trainer trash --project NAME [--restore BATCH]`: list a project's trash, or undo one batch."""

from __future__ import annotations

NAME = "trash"
HELP = "list what a project's trash holds (newest first), or put one batch back with --restore"


def add_arguments(parser) -> None:
    from ._common import add_project_arguments

    add_project_arguments(parser)
    parser.add_argument("--restore", metavar="BATCH", default=None,
                        help="the batch to put back (its id, as listed); what stands in its place now goes to a new batch")


def run(args) -> int:
    import time

    from .. import trash
    from ._common import project_of

    project = project_of(args)
    if args.restore:
        batch = next((b for b in trash.list_batches(project.dir) if b.batch_id == args.restore), None)
        displaced = trash.restore(project.dir, args.restore)  # an unknown id: its sentence
        print(f"Restored {len(batch.files)} files of batch {batch.batch_id} ({batch.reason}).")
        if displaced is not None:
            print(f"The files they replaced are in the trash as batch {displaced.batch_id}.")
        return 0
    batches = trash.list_batches(project.dir)
    if not batches:
        print(f"The trash of {project.name} is empty.")
    for b in batches:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(b.created))
        kind = "copies" if b.kept_original else "files"
        print(f"{b.batch_id}  {when}  {len(b.files)} {kind}  {b.reason}")
        if b.warning():
            print(f"    {b.warning()}")
    return 0
