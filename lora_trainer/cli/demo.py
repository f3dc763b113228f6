"""`python -m lora_trainer demo [--arch sd15|sdxl] [--root DIR] [--port N] [--no-ui]`: a demo project, then the studio."""

from __future__ import annotations

from ..project import DEMO_MODEL  # inside the project folder; Compare and Train look for it there

NAME = "demo"
HELP = "create the demo project (a concept to teach a small model that has learned a world of shapes) and start the studio on it"

DEMO_PROJECTS = {"sd15": "demo", "sdxl": "demo-xl"}  # one project per micro model


def add_arguments(parser) -> None:
    from ._common import add_root_argument, add_serve_arguments

    add_root_argument(parser)
    add_serve_arguments(parser)
    parser.add_argument("--no-ui", action="store_true", help="only create the demo project")
    parser.add_argument("--arch", choices=tuple(DEMO_PROJECTS), default="sd15",
                        help="the micro model's family: sd15 (project 'demo') or sdxl (project 'demo-xl')")


def demo_train_config(checkpoint: str, arch: str = "sd15"):
    """The guide's preset of `arch` at the micro models' size (64 px), so the demo trains its
    concept on a 2-core CPU in a minute or two: AdamW in fp32 (no bitsandbytes, no GPU assumed)."""
    from ..demo.world import NATIVE_SIZE
    from ..train.config import DatasetFolder, TrainConfig

    preset = TrainConfig.defaults_for(arch)
    return preset.replace(
        checkpoint=checkpoint,
        datasets=[DatasetFolder(path="dataset", repeats=5)],
        resolution=NATIVE_SIZE,
        bucket_no_upscale=True,
        min_bucket_reso=NATIVE_SIZE,
        max_bucket_reso=NATIVE_SIZE,
        max_train_epochs=4,
        keep_only_last_n_epochs=4,
        optimizer="AdamW",
        optimizer_args={},
        mixed_precision="no",
        full_fp16=False,
        gradient_checkpointing=False,  # nothing to save at 64 px
        cache_latents_to_disk=False,
        network_dim=8,
        network_alpha=4.0,
    )


def ensure_demo_project(root, arch: str = "sd15"):
    """Create the demo project of `arch` once (the concept's pictures, a model, a training setup);
    later calls only add what is missing, so the user's edits stay.

    The model is a copy of the learned micro model when one ships (demo.shipped), else a random
    tiny one that says it is 64 px. A demo model of an older studio (made before the 64-px demo,
    or a random one once a learned one ships) is renewed with the pictures, the old files kept in
    the project's Trash."""
    from ..demo import shipped
    from ..demo.dataset import make_demo_dataset
    from ..demo.world import NATIVE_SIZE
    from ..models.demo import write_demo_checkpoint
    from ..project import create_project, list_projects, open_project
    from ..trash import move_to_trash

    name = DEMO_PROJECTS[arch]
    project = open_project(root, name) if name in list_projects(root) else create_project(root, name)
    model = project.dir / DEMO_MODEL
    pf = project.load_file()
    if model.exists() and _outdated(model, arch):
        old = [model] + [p for p in project.dataset_dir.glob("*") if p.is_file()]
        move_to_trash(project.dir, old, "the demo was renewed; these were the old demo's")
        pf.set_section("train", {})
        print(f"Renewed the demo project: the old model and pictures are in its Trash ({project.dir}).")
    if not any(project.dataset_dir.glob("*.png")):
        make_demo_dataset(project.dataset_dir)
    if not model.exists():
        if shipped.available(arch):
            shipped.copy_micro_model(model, arch)
        else:
            write_demo_checkpoint(model, arch=arch, seed=0, resolution=NATIVE_SIZE)
    if not pf.section("train"):
        pf.set_section("train", demo_train_config(DEMO_MODEL, arch).to_toml_dict())
    project.save_file(pf)
    return project


def _outdated(model, arch: str) -> bool:
    from ..demo import shipped
    from ..errors import StudioError
    from ..models.checkpoint import RESOLUTION_KEY, read_safetensors_metadata

    try:
        header = read_safetensors_metadata(model)
    except StudioError:
        return False  # not ours to judge: the user put another model there
    if shipped.MARKER_KEY in header:
        return False
    return RESOLUTION_KEY not in header or shipped.available(arch)


def run(args) -> int:
    from ._common import root_of, serve_access, serve_studio

    root = root_of(args)
    access = None if args.no_ui else serve_access(args)  # refused before anything is made
    project = ensure_demo_project(root, args.arch)
    print(f"Demo project ready: {project.dir}")
    if args.no_ui:
        return 0
    return serve_studio(args, root, access)
