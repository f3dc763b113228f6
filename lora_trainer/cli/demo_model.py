"""`python -m lora_trainer demo-model --arch sd15 --out tiny.safetensors`: a tiny random checkpoint."""

from __future__ import annotations

NAME = "demo-model"
HELP = "write a tiny random SD1.5/SDXL checkpoint (real file format, a few MB) for demos and tests"


def add_arguments(parser) -> None:
    parser.add_argument("--arch", choices=("sd15", "sdxl"), default="sd15", help="architecture family")
    parser.add_argument("--out", required=True, help="the .safetensors file to write")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same tensors")
    parser.add_argument("--dtype", choices=("fp16", "fp32", "bf16"), default="fp16")
    parser.add_argument("--v-pred", action="store_true", help="mark it as a v-prediction model (adds the v_pred key)")
    parser.add_argument("--ztsnr", action="store_true", help="mark it as zero-terminal-SNR (adds the ztsnr key)")


def run(args) -> int:
    import os

    from ..models.demo import write_demo_checkpoint

    path = write_demo_checkpoint(
        args.out, args.arch, args.seed, args.dtype, "v" if args.v_pred else "eps", args.ztsnr
    )
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB, tiny random {args.arch}, seed {args.seed})")
    return 0
