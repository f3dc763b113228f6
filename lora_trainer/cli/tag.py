"""`python -m lora_trainer tag --project NAME --model-dir DIR ...`: booru tags with the WD taggers."""

from __future__ import annotations

NAME = "tag"
HELP = "tag a project's images with a WD tagger (or two: the union of their tags)"


def _comma_list(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


def add_arguments(parser) -> None:
    from ._common import add_caption_writing_arguments, add_project_arguments


    add_project_arguments(parser)
    parser.add_argument(
        "--model-dir",
        default="wd-eva02-large-tagger-v3",
        help="a folder with model.onnx + selected_tags.csv, or a tagger name such as wd-eva02-large-tagger-v3 "
        "(downloaded once into --models-dir; default wd-eva02-large-tagger-v3)",
    )
    parser.add_argument(
        "--model-dir2",
        help="a second tagger; its new tags are added (the Dataset Maker's 'Both')",
    )
    parser.add_argument(
        "--models-dir", help="where named taggers are kept (default: <root>/_models)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.35,
        help="general tag threshold (default 0.35)",
    )
    parser.add_argument(
        "--character-threshold",
        type=float,
        default=0.85,
        help="character tag threshold (default 0.85)",
    )
    parser.add_argument(
        "--no-characters", action="store_true", help="leave character names out"
    )
    parser.add_argument(
        "--mcut",
        action="store_true",
        help="pick thresholds per image with MCut instead",
    )
    parser.add_argument(
        "--blacklist",
        type=_comma_list,
        default=[],
        metavar="T1,T2",
        help="tags never written",
    )
    parser.add_argument(
        "--escape",
        action="store_true",
        help="write \\( \\) for WebUI prompts (not for training)",
    )
    add_caption_writing_arguments(parser, "images per inference batch")
    parser.add_argument(
        "--top",
        type=int,
        default=50,
        help="how many of the top tags to print (default 50)",
    )


def run(args) -> int:
    from pathlib import Path

    from ..dataset.tagger import TagSettings, tag_dataset
    from ._common import print_caption_writes, project_of
    from ._console import ConsoleProgress

    project = project_of(args)
    settings = TagSettings(
        threshold=args.threshold,
        character_threshold=args.character_threshold,
        characters=not args.no_characters,
        mcut=args.mcut,
        blacklist=tuple(args.blacklist),
        escape=args.escape,
        batch_size=args.batch,
    )
    models = [args.model_dir] + ([args.model_dir2] if args.model_dir2 else [])
    models_dir = Path(args.models_dir) if args.models_dir else project.root / "_models"
    result = tag_dataset(
        project.dataset_dir,
        project.dir,
        models,
        settings,
        args.mode,
        models_dir,
        progress=ConsoleProgress(),
    )
    print_caption_writes("Tagged", len(result.tags), result.write, result.failed)
    print(f"Top {args.top} tags in the dataset:")
    for tag, n in result.top_tags.most_common(args.top):
        print(f"  {tag} ({n})")
    return 0
