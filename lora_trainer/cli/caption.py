"""`python -m lora_trainer caption --project NAME ...`: sentence captions for photos (CoCa)."""

from __future__ import annotations

NAME = "caption"
HELP = "caption a project's photos with CoCa (open_clip): short sentences, for realistic subjects"


def add_arguments(parser) -> None:
    from ._common import add_caption_writing_arguments, add_project_arguments


    add_project_arguments(parser)
    parser.add_argument(
        "--model",
        default="coca_ViT-L-14",
        help="open_clip CoCa model name, or a folder with open_clip_config.json",
    )
    parser.add_argument(
        "--pretrained",
        default="mscoco_finetuned_laion2b_s13b_b90k",
        help="pretrained tag or weights file",
    )
    parser.add_argument(
        "--models-dir",
        help="where downloaded weights are kept (default: <root>/_models)",
    )
    parser.add_argument(
        "--min-len",
        type=int,
        default=10,
        help="shortest caption in tokens (default 10)",
    )
    parser.add_argument(
        "--max-len", type=int, default=75, help="longest caption in tokens (default 75)"
    )
    parser.add_argument(
        "--beams",
        type=int,
        default=6,
        help="beam search width (default 6, in 3 groups)",
    )
    add_caption_writing_arguments(parser, "images per batch")


def run(args) -> int:
    from pathlib import Path

    from ..dataset.captioner import CocaSettings, caption_dataset, load_coca_captioner
    from ._common import print_caption_writes, project_of
    from ._console import ConsoleProgress

    project = project_of(args)
    progress = ConsoleProgress()
    groups = 3 if args.beams % 3 == 0 else 1
    settings = CocaSettings(
        min_len=args.min_len,
        max_len=args.max_len,
        num_beams=args.beams,
        num_beam_groups=groups,
    )
    models_dir = Path(args.models_dir) if args.models_dir else project.root / "_models"
    captioner = load_coca_captioner(
        args.model, args.pretrained, settings, models_dir, progress=progress
    )
    result = caption_dataset(
        project.dataset_dir,
        project.dir,
        captioner,
        args.mode,
        args.batch,
        progress=progress,
    )
    print_caption_writes("Captioned", len(result.captions), result.write, result.failed)
    for name, text in list(result.captions.items())[:10]:
        print(f"  {name}: {text}")
    return 0
