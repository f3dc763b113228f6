"""`python -m lora_trainer demo [--root DIR] [--port N] [--no-ui]`: a demo project, then the studio."""

from __future__ import annotations

from ..project import DEMO_MODEL  # inside the project folder; Compare and Train look for it there

NAME = "demo"
HELP = "create the demo project (synthetic images with captions) and start the studio on it"

DEMO_PROJECT = "demo"


def add_arguments(parser) -> None:
    from ._common import add_root_argument, add_serve_arguments

    add_root_argument(parser)
    add_serve_arguments(parser)
    parser.add_argument("--no-ui", action="store_true", help="only create the demo project")


def demo_train_config(checkpoint: str):
    """The guide's SD1.5 preset, shrunk so the tiny demo model trains on a CPU in a minute or two."""
    from ..train.config import DatasetFolder, TrainConfig

    return TrainConfig.sd15_defaults().replace(
        checkpoint=checkpoint,
        datasets=[DatasetFolder(path="dataset", repeats=2)],
        resolution=256,  # the smallest the guide allows; no upscaling keeps the 128-px pictures small
        bucket_no_upscale=True,
        min_bucket_reso=64,
        max_bucket_reso=256,
        max_train_epochs=4,
        keep_only_last_n_epochs=4,
        optimizer="AdamW",  # no bitsandbytes / GPU assumed
        mixed_precision="no",
        network_dim=8,
        network_alpha=4.0,
    )


def ensure_demo_project(root):
    """Create the demo project once (pictures, a tiny SD1.5 model, a training setup); later calls
    only add what is missing, so the user's edits stay."""
    from ..demo.dataset import make_demo_dataset
    from ..models.demo import write_demo_checkpoint
    from ..project import create_project, list_projects, open_project

    if DEMO_PROJECT in list_projects(root):
        project = open_project(root, DEMO_PROJECT)
    else:
        project = create_project(root, DEMO_PROJECT)
        make_demo_dataset(project.dataset_dir)
    model = project.dir / DEMO_MODEL
    if not model.exists():
        write_demo_checkpoint(model, arch="sd15", seed=0)
    pf = project.load_file()
    if not pf.section("train"):
        pf.set_section("train", demo_train_config(DEMO_MODEL).to_toml_dict())
        project.save_file(pf)
    return project


def run(args) -> int:
    from ._common import root_of, serve_access, serve_studio

    root = root_of(args)
    access = None if args.no_ui else serve_access(args)  # refused before anything is made
    project = ensure_demo_project(root)
    print(f"Demo project ready: {project.dir}")
    if args.no_ui:
        return 0
    return serve_studio(args, root, access)
