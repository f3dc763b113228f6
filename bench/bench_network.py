"""Network numbers at real SD1.5 / SDXL size: build time, file size, save / read / describe time.

    .venv/bin/python bench/bench_network.py [--dim 32] [--out /tmp]

The base models are built on the meta device (no weights); the LoRA tensors are materialised on
the CPU with kohya's init plus a random lora_up, then saved in fp16 like an epoch file.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lora_trainer.models.clip_text import ClipTextConfig, ClipTextModel
from lora_trainer.models.unet import UNet, UNetConfig
from lora_trainer.network import (
    LoraMetadata,
    NetworkConfig,
    create_network,
    read_lora_file,
    save_network,
)
from lora_trainer.network.info import describe_lora


@dataclass
class Bundle:
    arch: str
    unet: nn.Module
    text_encoders: list


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp())
    with torch.device("meta"):
        clip_l = ClipTextModel(ClipTextConfig.clip_l())
        bundles = {
            "sd15": Bundle("sd15", UNet(UNetConfig.sd15()), [("lora_te", clip_l)]),
            "sdxl": Bundle(
                "sdxl", UNet(UNetConfig.sdxl()), [("lora_te1", clip_l), ("lora_te2", ClipTextModel(ClipTextConfig.clip_bigg()))]
            ),
        }
    for arch, bundle in bundles.items():
        for conv in (None, args.dim // 2):
            t0 = time.perf_counter()
            net = create_network(bundle, NetworkConfig(dim=args.dim, alpha=args.dim / 2, conv_dim=conv))
            t_build = time.perf_counter() - t0
            net.to_empty(device="cpu")
            for _, lora in net.loras():
                lora.reset_parameters()
                nn.init.normal_(lora.lora_up.weight, std=1e-3)
            path = out / f"{arch}-{'locon' if conv else 'lora'}-{args.dim}.safetensors"
            t0 = time.perf_counter()
            save_network(net, path, LoraMetadata(arch=arch, epoch=1, steps=100))
            t_save = time.perf_counter() - t0
            t0 = time.perf_counter()
            read_lora_file(path)
            t_read = time.perf_counter() - t0
            t0 = time.perf_counter()
            describe_lora(path)
            t_info = time.perf_counter() - t0
            print(
                f"{arch} {'LoCon' if conv else 'LoRA '} dim {args.dim:3d}: {sum(net.counts().values()):4d} modules, "
                f"{path.stat().st_size / 1e6:7.1f} MB; build {t_build:5.2f}s, save+hash {t_save:5.2f}s, "
                f"read {t_read:5.2f}s, lora-info {t_info:5.2f}s"
            )


if __name__ == "__main__":
    main()
