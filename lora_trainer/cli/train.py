"""`python -m lora_trainer train`: train a LoRA from a project's settings, or preview the run.

    train --project alice --root Loras --checkpoint model.safetensors      settings from [train] of project.toml
    train --config Loras/alice/project.toml --checkpoint model.safetensors the project is the file's folder
    train --config my.toml --project alice ...                              [train] (or top-level keys) of my.toml
    train ... --set unet_lr=3e-4 --set max_train_epochs=5                   overrides, TOML values
    train ... --dry-run [--json]                                            step plan and network size, no weights loaded
    train ... --resume                                                      continue after the last saved epoch
    torchrun --nproc_per_node 2 -m lora_trainer train ...                   one process per GPU (DDP)
"""

from __future__ import annotations

NAME = "train"
HELP = "train a LoRA/LoCon (or --dry-run: show the step plan and network size without loading a model)"


def add_arguments(parser) -> None:
    parser.add_argument("--config", help="a TOML file: a project.toml, or any file with a [train] table or top-level settings")
    parser.add_argument("--project", help="project name (default: the folder of --config)")
    parser.add_argument("--root", help="studio root folder (default: $LORA_STUDIO_ROOT or ./studio)")
    parser.add_argument("--checkpoint", help="SD1.5/SDXL checkpoint to train on (overrides the config's checkpoint)")
    parser.add_argument("--arch", choices=("sd15", "sdxl"), help="the model family, when the config does not say (defaults follow it)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting; VALUE is read as TOML (3e-4, true, \"text\"), else as text (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the last run from its last saved epoch")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (steps, buckets, network size) and stop")
    parser.add_argument("--json", action="store_true", help="machine-readable output (the plan, or the result)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (under torchrun: cuda:LOCAL_RANK)")
    parser.add_argument("--dtype", choices=("auto", "fp16", "bf16", "fp32"), default="auto",
                        help="the frozen model's precision; auto = fp16 on a GPU, fp32 on the CPU")


def parse_override(text: str) -> tuple[str, object]:
    """`unet_lr=3e-4` -> ("unet_lr", 0.0003); a value that is not TOML stays a string."""
    from ..errors import StudioError
    from ..toml_io import value_of

    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise StudioError(f"--set {text!r} is not KEY=VALUE.", "For example: --set unet_lr=3e-4")
    return key, value_of(value)


def resolve(args):
    """(project, TrainConfig) from the flags."""
    from pathlib import Path

    from ..errors import StudioError
    from ..project import Project, check_name, default_root, open_project
    from ..toml_io import load
    from ..train.config import TrainConfig

    section: dict = {}
    project = None
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise StudioError(f"The config file {path} does not exist.", "Give the path of a project.toml or a TOML file with [train].")
        doc = load(path)
        section = doc["train"] if isinstance(doc.get("train"), dict) else {k: v for k, v in doc.items() if not isinstance(v, dict) or k == "datasets"}
        section.pop("schema_version", None)
        if not args.project:
            folder = path.absolute().parent
            project = Project(folder.parent, check_name(folder.name))
    if project is None:
        if not args.project:
            raise StudioError("No project given.", "Pass --project NAME (with --root DIR), or --config <project>/project.toml.")
        root = Path(args.root) if args.root else default_root()
        project = open_project(root, args.project)
        if not args.config:
            section = project.load_file().section("train")
    for text in args.set:
        key, value = parse_override(text)
        section[key] = value
    if args.arch and "arch" not in section:
        section["arch"] = args.arch
    if args.checkpoint:
        section["checkpoint"] = str(Path(args.checkpoint).absolute())
    if isinstance(section.get("checkpoint"), str) and section["checkpoint"]:
        # relative model paths are inside the project folder (TrainConfig.checkpoint_path)
        section["checkpoint"] = str(TrainConfig(checkpoint=section["checkpoint"]).checkpoint_path(project.dir))
    if not section.get("arch") and section.get("checkpoint") and Path(section["checkpoint"]).is_file():
        from ..models.checkpoint import describe

        section["arch"] = describe(section["checkpoint"])["arch"]  # the model's family picks the defaults
    return project, TrainConfig.from_toml_dict(section, f"[train] of {args.config or project.toml_path}")


def run(args) -> int:
    import json
    import sys

    from ..errors import StudioError

    project, config = resolve(args)
    if args.dry_run:
        from ..train.run import dry_run, dry_run_json

        print(dry_run_json(project, config) if args.json else dry_run(project, config))
        return 0

    import torch

    from ..host.standalone import StandaloneHost
    from ..train import distributed as D
    from ..train.run import output_dir_for, train_job
    from ._console import ConsoleProgress

    if not config.checkpoint:
        raise StudioError("Training from the command line needs a model file.",
                          "Pass --checkpoint FILE (or set checkpoint in the [train] section).")
    info = D.init_from_env()
    with D.process_group(info):
        if info.enabled:
            device = f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu"
        else:
            device = None if args.device == "auto" else args.device
        dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
        out_dir = output_dir_for(project, config, None)
        host = StandaloneHost(config.checkpoint, lora_dirs=[out_dir], device=device, dtype=dtypes.get(args.dtype),
                              clip_skip=config.clip_skip if config.arch == "sd15" else 1)
        progress = ConsoleProgress() if info.is_main else (lambda e: None)
        result = train_job(project, config, host, progress, None, resume=args.resume)
    if info.is_main:
        if args.json:
            print(json.dumps(result.to_json(), indent=1))
        else:
            print(f"Saved {len(result.files)} file(s) in {result.output_dir}: {', '.join(p.name for p in result.files)}", file=sys.stdout)
            if result.loss_log:
                print(f"Loss log: {result.loss_log}")
    return 0
