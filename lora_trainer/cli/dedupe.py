"""`python -m lora_trainer dedupe --project NAME [--apply]`: find (and trash) duplicate images."""

from __future__ import annotations

NAME = "dedupe"
HELP = "find exact and near-duplicate images (CLIP); with --apply, move all but the best of each group to the trash"


def add_arguments(parser) -> None:
    from ._common import add_project_arguments


    add_project_arguments(parser)
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.985,
        help="cosine similarity for near duplicates (default 0.985)",
    )
    parser.add_argument(
        "--apply",
        action="store_true",
        help="move the duplicates (and their captions) to the trash",
    )
    parser.add_argument(
        "--exact-only",
        action="store_true",
        help="only byte-identical files (no CLIP model needed)",
    )
    parser.add_argument(
        "--model",
        default="ViT-B-32",
        help="open_clip model name, or a folder with open_clip_config.json",
    )
    parser.add_argument(
        "--pretrained",
        default="laion2b_s34b_b79k",
        help="pretrained tag or weights file",
    )
    parser.add_argument(
        "--models-dir",
        help="where downloaded weights are kept (default: <root>/_models)",
    )
    parser.add_argument(
        "--batch", type=int, default=32, help="images per embedding batch (default 32)"
    )


def run(args) -> int:
    from pathlib import Path

    from ..dataset.dedupe import apply_plan, find_duplicates, load_clip_embedder
    from ._common import project_of
    from ._console import ConsoleProgress

    project = project_of(args)
    progress = ConsoleProgress()
    embedder = None
    if not args.exact_only:
        models_dir = (
            Path(args.models_dir) if args.models_dir else project.root / "_models"
        )
        embedder = load_clip_embedder(
            args.model, args.pretrained, models_dir, progress=progress
        )
    plan = find_duplicates(
        project.dataset_dir,
        project.cache_dir,
        args.threshold,
        embedder,
        near=not args.exact_only,
        batch_size=args.batch,
        progress=progress,
    )
    for n, group in enumerate(plan.groups, 1):
        print(f"group {n} ({'identical files' if group.exact else 'similar'}):")
        for m in group.members:
            mark = "keep  " if m.keep else "remove"
            print(
                f"  {mark} {m.path}  {m.width}x{m.height}  {m.size_bytes // 1024} KiB  similarity {m.similarity:.4f}"
            )
    if plan.failed:
        print(
            f"Could not read {len(plan.failed)} images: {', '.join(plan.failed[:10])}"
        )
    print(plan.summary())
    if args.apply and plan.groups:
        batch = apply_plan(project.dir, plan)
        if batch:
            print(
                f"Moved {len(batch.files)} files to the trash (batch {batch.batch_id}); to undo: "
                f"python -m lora_trainer trash --project {project.name} --restore {batch.batch_id}"
            )
    elif plan.groups:
        print(
            "Nothing was moved; run again with --apply to move the duplicates to the trash."
        )
    return 0
