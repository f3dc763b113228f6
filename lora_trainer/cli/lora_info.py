"""`python -m lora_trainer lora-info FILE [--json]`: what a LoRA file is and how it was trained."""

from __future__ import annotations

import argparse
import json

NAME = "lora-info"
HELP = "show a LoRA file's architecture, type, ranks, module counts, precision and training summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="+", help="one or more .safetensors LoRA files")
    parser.add_argument("--json", action="store_true", help="print JSON (one object, or a list for several files)")
    parser.add_argument("--tags", type=int, default=10, metavar="N", help="how many top tags to show (default 10)")


def run(args: argparse.Namespace) -> int:
    from ..network.info import describe_lora, format_info

    infos = [describe_lora(path, n_tags=args.tags) for path in args.file]
    if args.json:
        data = [i.to_json() for i in infos]
        print(json.dumps(data[0] if len(data) == 1 else data, indent=2))
    else:
        print("\n\n".join(format_info(i) for i in infos))
    return 0
