"""`python -m lora_trainer generate --checkpoint FILE --prompt P --out IMG.png`: one image, WebUI infotext."""

from __future__ import annotations

NAME = "generate"
HELP = "generate one image from a checkpoint (standalone sampler), with WebUI-style parameters in the PNG"


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="an SD1.5 or SDXL .safetensors/.ckpt file")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative", default="", help="negative prompt")
    parser.add_argument("--seed", type=int, default=-1, help="-1 picks a random seed (printed and saved)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=7.0, help="CFG scale; 1 = no guidance (faster)")
    parser.add_argument("--width", type=int, default=None, help="default: the model's size (512 SD1.5, 1024 SDXL)")
    parser.add_argument("--height", type=int, default=None, help="default: the model's size (512 SD1.5, 1024 SDXL)")
    parser.add_argument("--sampler", default="DPM++ 2M", help="DPM++ 2M, Euler a or Euler")
    parser.add_argument("--scheduler", default="karras", help="karras, exponential or uniform")
    parser.add_argument("--lora", action="append", default=[], metavar="FILE:W", help="a LoRA at weight W (repeatable)")
    parser.add_argument("--clip-skip", type=int, default=1, help="SD1.5 only; 2 = the WebUI's 'CLIP skip 2'")
    parser.add_argument("--prediction", choices=("auto", "eps", "v"), default="auto", help="override the file's prediction type")
    parser.add_argument("--ztsnr", action="store_true", help="treat the model as zero-terminal-SNR")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", choices=("auto", "fp16", "bf16", "fp32"), default="auto", help="auto: fp16 on GPU, fp32 on CPU")
    parser.add_argument("--out", required=True, help="the PNG to write")


def parse_lora(spec: str) -> tuple[str, float]:
    """"path/to/x.safetensors:0.8" -> (path, 0.8); no weight means 1.0 (drive letters survive)."""
    from ..errors import StudioError

    path, sep, weight = spec.rpartition(":")
    if sep and path:
        try:
            return path, float(weight)
        except ValueError:
            if "\\" not in weight and "/" not in weight:
                raise StudioError(f"--lora {spec!r}: {weight!r} is not a number.", "Write FILE:WEIGHT, e.g. my_lora.safetensors:0.8.") from None
    return spec, 1.0


def run(args) -> int:
    import contextlib
    import random
    from pathlib import Path

    import torch

    from ..errors import StudioError
    from ..models.bundle import load_bundle
    from ..models.checkpoint import model_hash, native_size, read_checkpoint
    from ..models.sampler import GenerationParams, generate, resolve_sampler, save_png
    from ..network.io import apply_loras
    from ._console import ConsoleProgress

    resolve_sampler(args.sampler)  # fail before loading a model
    loras = [parse_lora(s) for s in args.lora]
    for path, _ in loras:
        if not Path(path).is_file():
            raise StudioError(f"LoRA file {path} does not exist.", "Check the path given to --lora.")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    dtype = dtypes.get(args.dtype) or (torch.float16 if torch.device(device).type == "cuda" else torch.float32)
    bundle = load_bundle(
        args.checkpoint, device, dtype,
        prediction=None if args.prediction == "auto" else args.prediction,
        zero_terminal_snr=True if args.ztsnr else None,
        clip_skip=args.clip_skip,
    )
    width, height = native_size(bundle.arch, read_checkpoint(args.checkpoint)[1])
    seed = args.seed if args.seed >= 0 else random.randrange(2**32)
    params = GenerationParams(
        prompt=args.prompt, negative=args.negative, seed=seed, steps=args.steps, cfg=args.cfg,
        width=args.width or width, height=args.height or height,
        sampler=args.sampler, scheduler=args.scheduler,
        model_hash=model_hash(args.checkpoint), model_name=Path(args.checkpoint).stem,
        loras=tuple(loras),
        extra={"Clip skip": str(args.clip_skip)} if args.clip_skip > 1 else {},
    )
    with apply_loras(bundle, loras, mode="hooks") if loras else contextlib.nullcontext():  # restored after
        image = generate(
            bundle, params.prompt, params.negative, params.seed, params.steps, params.cfg,
            params.width, params.height, params.sampler, params.scheduler, progress=ConsoleProgress(),
            emphasis=True,  # (word:1.2) as the WebUI reads it, like every standalone generation
        )
    save_png(image, args.out, params.infotext())
    print(f"wrote {args.out}\n{params.infotext()}")
    return 0
