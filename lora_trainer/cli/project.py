"""`python -m lora_trainer project create|list|show NAME [--root DIR]`."""

from __future__ import annotations

NAME = "project"
HELP = "create, list or show projects"


def add_arguments(parser) -> None:
    from ._common import add_root_argument

    parser.add_argument("action", choices=["create", "list", "show"])
    parser.add_argument("name", nargs="?", help="project name (name or category/name)")
    add_root_argument(parser)


def run(args) -> int:
    from ..dataset.images import IMAGE_EXTS
    from ..errors import StudioError
    from ..project import create_project, list_projects, open_project
    from ._common import root_of

    root = root_of(args)
    if args.action == "list":
        for name in list_projects(root):
            print(name)
        return 0
    if not args.name:
        raise StudioError(f"'project {args.action}' needs a project name.", f"For example: project {args.action} my-lora")
    if args.action == "create":
        p = create_project(root, args.name)
        print(f"Created {p.name} in {p.dir}")
        return 0
    p = open_project(root, args.name)
    images = [f for f in p.dataset_dir.rglob("*") if f.suffix.lower() in IMAGE_EXTS] if p.dataset_dir.is_dir() else []
    outputs = sorted(f.name for f in p.output_dir.glob("*.safetensors")) if p.output_dir.is_dir() else []
    print(f"project:  {p.name}")
    print(f"folder:   {p.dir}")
    print(f"dataset:  {len(images)} images in {p.dataset_dir}")
    print(f"outputs:  {len(outputs)} LoRA files in {p.output_dir}" + (f" ({', '.join(outputs[-3:])})" if outputs else ""))
    print(f"settings: {p.toml_path}" + ("" if p.toml_path.exists() else " (not written yet)"))
    return 0
