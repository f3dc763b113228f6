"""`python -m lora_trainer grid --project NAME --out GRID.png`: a grid of saved epochs x LoRA weights.

Rendered with the standalone host (our sampler): the checkpoint is --checkpoint, else the
project's [train] checkpoint, else the project's demo model (`<project>/demo-model.safetensors`).
Prints the equivalent X/Y/Z plot settings for running the same grid in the WebUI.
"""

from __future__ import annotations

NAME = "grid"
HELP = "render a comparison grid of a project's saved epochs x LoRA weights (X/Y/Z-plot compatible)"



def add_arguments(parser) -> None:
    parser.add_argument("--project", help="the project whose LoRA files to compare")
    parser.add_argument("--root", help="studio root folder (default: $LORA_STUDIO_ROOT or ./studio)")
    parser.add_argument("--lora-dir", help="the folder of the run's LoRA files (default: the project's output folder)")
    parser.add_argument("--name", help="the run's file stem, NAME of NAME-01.safetensors (default: the project's, or the folder's only run)")
    parser.add_argument("--epochs", default="all", help="all, every:K (multiples of K) or a list like 1,3,5 or 2,final (default all)")
    parser.add_argument("--weights", default="0.5,0.6,0.7,0.8,0.9,1", help="LoRA weights, e.g. 0.5,0.75,1")
    parser.add_argument("--prompt", help="default: the dataset's activation and most common tags; the run's <lora:...> tag is added")
    parser.add_argument("--negative", default="", help="negative prompt")
    parser.add_argument("--seed", type=int, nargs="+", default=[1], metavar="S", help="one or more seeds (one row per epoch and seed)")
    parser.add_argument("--steps", type=int, help="default 20")
    parser.add_argument("--cfg", type=float, help="CFG scale, default 7")
    parser.add_argument("--size", help="WxH, default: the model's size (512x512 SD1.5, 1024x1024 SDXL)")
    parser.add_argument("--sampler", help="DPM++ 2M (default), Euler a or Euler")
    parser.add_argument("--scheduler", help="Karras (default), Exponential, Uniform or Automatic")
    parser.add_argument("--no-lora-column", action="store_true", help="add a column without the LoRA")
    parser.add_argument("--swap-axes", action="store_true", help="rows = weights, columns = epochs")
    parser.add_argument("--checkpoint", help="SD1.5/SDXL checkpoint (default: the project's [train] checkpoint, else its demo model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", choices=("auto", "fp16", "bf16", "fp32"), default="auto", help="auto: fp16 on GPU, fp32 on CPU")
    parser.add_argument("--xyz-out", help="also write the X/Y/Z plot settings to this text file")
    parser.add_argument("--out", required=True, help="the grid PNG to write (its plan goes beside it as .json)")


def parse_size(text: str) -> tuple[int, int]:
    from ..errors import StudioError

    w, sep, h = text.lower().partition("x")
    try:
        if not sep:
            raise ValueError
        return int(w), int(h)
    except ValueError:
        raise StudioError(f"--size {text!r} is not WIDTHxHEIGHT.", "Write it like 512x512.") from None


def find_checkpoint(explicit: str | None, project) -> str:
    """--checkpoint, else the project's own (Project.checkpoint); else a StudioError."""
    from ..errors import StudioError

    if explicit:
        return explicit
    found = project.checkpoint() if project is not None else None
    if found is None:
        raise StudioError(
            "No checkpoint to render the grid with.",
            "Pass --checkpoint FILE (an SD1.5 or SDXL .safetensors), or set the project's training checkpoint.",
        )
    return str(found)


def run(args) -> int:
    from pathlib import Path

    from ..compare.plan import GridSettings, make_plan, parse_weights
    from ..compare.render import render_grid
    from ..errors import StudioError
    from ..fileio import write_text
    from ..host.standalone import StandaloneHost
    from ..project import default_root, open_project
    from ._console import ConsoleProgress

    project = None
    if args.project:
        project = open_project(Path(args.root) if args.root else default_root(), args.project)
    elif not args.lora_dir:
        raise StudioError("Say which LoRA files to compare.", "Pass --project NAME, or --lora-dir DIR.")
    lora_dir = Path(args.lora_dir) if args.lora_dir else project.output_dir
    stem = args.name
    if stem is None and project is not None and lora_dir.is_dir():
        mine = project.file_stem
        if any(p.stem == mine or p.stem.startswith(mine + "-") for p in lora_dir.glob("*.safetensors")):
            stem = mine
    width = height = None
    if args.size:
        width, height = parse_size(args.size)
    settings = GridSettings(
        epochs=args.epochs, weights=tuple(parse_weights(args.weights)), prompt=args.prompt,
        negative_prompt=args.negative, seeds=tuple(args.seed), steps=args.steps, cfg_scale=args.cfg,
        width=width, height=height, sampler_name=args.sampler, scheduler=args.scheduler,
        no_lora_column=args.no_lora_column, swap_axes=args.swap_axes,
    )

    import torch

    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    from ..train.config import clip_skip_of

    checkpoint = find_checkpoint(args.checkpoint, project)
    host = StandaloneHost(
        checkpoint, [lora_dir], device=None if args.device == "auto" else args.device, dtype=dtypes.get(args.dtype),
        clip_skip=clip_skip_of(project, checkpoint) if project is not None else 1,  # as the project trains
    )
    keep = project.load_file().section("train").get("keep_tokens", 1) if project is not None else 1
    plan = make_plan(
        lora_dir, settings, host.default_generation(), stem=stem,
        dataset_dir=project.dataset_dir if project is not None else None,
        keep_tokens=keep if isinstance(keep, int) and keep >= 0 else 1,
    )
    rows, cols = plan.shape
    print(f"{rows} x {cols} grid of {plan.stem}: {len(plan.epochs)} file(s), weights {', '.join(plan.weight_labels())}")
    print(f"prompt: {plan.base.prompt}")
    result = render_grid(host, plan, args.out, progress=ConsoleProgress())
    xyz_text = plan.xyz_script_text()
    if args.xyz_out:
        write_text(args.xyz_out, xyz_text)
    print(f"\nwrote {result.png} ({result.image.width}x{result.image.height}) and {result.json}")
    print("\nThe same grid with the WebUI's X/Y/Z plot:\n" + xyz_text)
    return 0
