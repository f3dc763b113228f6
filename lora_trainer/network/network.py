"""A LoRA / LoCon network over a model bundle: kohya's `networks.lora.LoRANetwork`, our way.

The network owns only LoRA tensors. It reaches the base layers through forward hooks
(`attach`): the base modules keep their tensors, their names and their `forward`; removing the
hooks (`detach`) leaves them exactly as they were. That matters because the base tensors are
borrowed (from a memory-mapped checkpoint or from the WebUI's loaded model).

`merged(...)` is the other way to apply LoRAs, for generation: each targeted base module gets a
*new* weight Parameter holding W + sum of deltas, and its original Parameter object comes back
on exit. The borrowed tensors are never written to; the price is one extra copy of the targeted
weights while merged (hooks cost none, but add a little compute to every forward).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from .modules import LoRAModule
from .naming import Target, find_targets, select_targets


class BundleLike(Protocol):
    """The part of a ModelBundle the network needs."""

    arch: str  # "sd15" | "sdxl"
    unet: nn.Module
    text_encoders: Sequence[tuple[str, nn.Module]]  # (kohya prefix, module): ("lora_te1", clip_l), ...


@dataclass
class NetworkConfig:
    """Shape of a new network. Defaults are the guide's SD1.5 LoRA (colab-settings.md: dim 16, alpha 8)."""

    dim: int = 16  # rank of Linear and 1x1 conv deltas (kohya network_dim)
    alpha: float = 8.0  # scale = alpha / dim; the guide's rule of thumb is half of dim
    conv_dim: int | None = None  # set -> LoCon (kohya "C3Lier"): ResBlock/sampler layers too, 3x3 at this rank
    conv_alpha: float | None = None  # None with conv_dim set -> 1.0, kohya's default
    train_unet: bool = True
    train_text_encoder: bool = True  # False = kohya --network_train_unet_only
    dropout: float | None = None  # kohya --network_dropout: dropout on the down output
    rank_dropout: float | None = None  # kohya network_args rank_dropout
    module_dropout: float | None = None  # kohya network_args module_dropout

    @property
    def locon(self) -> bool:
        return self.conv_dim is not None

    @property
    def effective_conv_alpha(self) -> float:
        return 1.0 if self.conv_alpha is None else float(self.conv_alpha)

    def validate(self) -> None:
        """Raise ValueError naming the field, its value and the allowed range."""
        if self.dim < 1:
            raise ValueError(f"dim is {self.dim}; it must be 1 or more")
        if self.alpha <= 0:
            raise ValueError(f"alpha is {self.alpha}; it must be more than 0")
        if self.conv_dim is not None and self.conv_dim < 1:
            raise ValueError(f"conv_dim is {self.conv_dim}; it must be 1 or more (or None for plain LoRA)")
        if self.conv_alpha is not None and self.conv_alpha <= 0:
            raise ValueError(f"conv_alpha is {self.conv_alpha}; it must be more than 0")
        for name in ("dropout", "rank_dropout", "module_dropout"):
            p = getattr(self, name)
            if p is not None and not 0.0 <= p < 1.0:
                raise ValueError(f"{name} is {p}; it must be in [0, 1)")
        if not (self.train_unet or self.train_text_encoder):
            raise ValueError("train_unet and train_text_encoder are both False: nothing to train")

    def network_args(self) -> dict[str, str | float | None] | None:
        """kohya's `ss_network_args`: the --network_args strings, plus the injected "dropout".

        None for a plain LoRA without extra args (kohya writes the key only when args were given).
        """
        args: dict[str, str | float | None] = {}
        if self.conv_dim is not None:
            args["conv_dim"] = str(self.conv_dim)
            args["conv_alpha"] = f"{self.effective_conv_alpha:g}"  # "4", as a user types it on kohya's CLI
        if self.rank_dropout is not None:
            args["rank_dropout"] = str(self.rank_dropout)
        if self.module_dropout is not None:
            args["module_dropout"] = str(self.module_dropout)
        if not args:
            return None
        args["dropout"] = self.dropout
        return args


def _add_delta(lora: LoRAModule, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook: base output + LoRA delta of the same input (kohya's LoRAModule.forward)."""
    delta = lora(args[0])
    return output if delta is None else output + delta.to(output.dtype)


class LoRANetwork(nn.Module):
    """LoRA modules registered under their kohya keys, so `state_dict()` is the file's tensors.

    The modules are not children of the UNet, so `unet.train()` / `unet.eval()` do not reach
    them: dropouts follow the network's own mode (`network.train()`, `network.eval()`; a new
    module starts in training mode, so call `eval()` before sampling previews).
    """

    def __init__(self, arch: str, config: NetworkConfig | None = None):
        super().__init__()
        self.arch = arch
        self.config = config  # None when built from a file
        # Plain dicts, not submodules: the base layers must not become part of our state dict.
        self._targets: dict[str, Target] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    # -- building

    def add(self, target: Target, lora: LoRAModule) -> None:
        if target.key in self._targets:
            raise ValueError(f"LoRA key {target.key} added twice")
        self._targets[target.key] = target
        self.add_module(target.key, lora)

    def loras(self) -> Iterator[tuple[str, LoRAModule]]:
        yield from self.named_children()  # type: ignore[misc]

    def target(self, key: str) -> Target:
        return self._targets[key]

    def counts(self) -> dict[str, int]:
        """Modules per part, e.g. {"unet": 192, "te": 72}."""
        out: dict[str, int] = {}
        for t in self._targets.values():
            out[t.part] = out.get(t.part, 0) + 1
        return out

    # -- training helpers

    def set_multiplier(self, value: float, part: str | None = None) -> None:
        """Strength of every module, or of one part ("unet", "te", "te1", "te2"; "te*" = all text encoders)."""
        for key, lora in self.loras():
            p = self._targets[key].part
            if part is None or p == part or (part == "te*" and p != "unet"):
                lora.multiplier = value

    def param_groups(self, unet_lr: float | None, text_encoder_lr: float | None) -> list[dict]:
        """Optimizer groups in kohya's order (text encoders, then UNet); a part whose lr is 0 is left
        out of the optimizer but still saved, as kohya does. None = the optimizer's default lr."""
        groups = []
        for name, parts, lr in (("textencoder", ("te", "te1", "te2"), text_encoder_lr), ("unet", ("unet",), unet_lr)):
            params = [p for key, lora in self.loras() if self._targets[key].part in parts for p in lora.parameters()]
            if not params or lr == 0:
                continue
            group: dict = {"params": params, "name": name}
            if lr is not None:
                group["lr"] = lr
            groups.append(group)
        return groups

    # -- applying through hooks

    @property
    def is_attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> None:
        """Hook every LoRA module onto its base layer. Base tensors and names stay as they are."""
        if self._handles:
            raise RuntimeError("this network is already attached")
        try:
            for key, lora in self.loras():
                base = self._targets[key].module
                self._handles.append(base.register_forward_hook(functools.partial(_add_delta, lora)))
        except BaseException:
            self.detach()
            raise

    def detach(self) -> None:
        """Remove the hooks; the base layers' forward is exactly what it was before `attach`."""
        while self._handles:
            self._handles.pop().remove()

    @contextlib.contextmanager
    def attached(self) -> Iterator[LoRANetwork]:
        self.attach()
        try:
            yield self
        finally:
            self.detach()


@contextlib.contextmanager
def merged(networks: Sequence[LoRANetwork]) -> Iterator[None]:
    """Merge the networks' deltas (at their current multipliers) into the base weights, reversibly.

    Each targeted base module gets a new Parameter W + sum(deltas) in W's dtype; on exit the
    original Parameter object is put back, so the base tensors are the same objects with the same
    bytes (they were never written to). Costs one copy of every targeted weight while merged.
    """
    by_module: dict[int, tuple[nn.Module, list[LoRAModule]]] = {}
    for net in networks:
        for key, lora in net.loras():
            base = net.target(key).module
            by_module.setdefault(id(base), (base, []))[1].append(lora)
    originals: list[tuple[nn.Module, nn.Parameter]] = []
    try:
        with torch.no_grad():
            for base, loras in by_module.values():
                weight = base._parameters["weight"]
                total = weight.detach().to(torch.float32)
                for lora in loras:
                    total = total + lora.delta_weight().to(weight.device).reshape(weight.shape)
                originals.append((base, weight))
                base._parameters["weight"] = nn.Parameter(total.to(weight.dtype), requires_grad=False)
        yield
    finally:
        for base, weight in reversed(originals):
            base._parameters["weight"] = weight


def create_network_for(
    arch: str,
    unet: nn.Module | None,
    text_encoders: Sequence[tuple[str, nn.Module]],
    config: NetworkConfig,
) -> LoRANetwork:
    """A fresh network (kohya init: down random, up zero) on the targets kohya would choose."""
    config.validate()
    targets = select_targets(
        find_targets(arch, unet, text_encoders),
        locon=config.locon,
        unet=config.train_unet,
        text_encoders=config.train_text_encoder,
    )
    network = LoRANetwork(arch, config)
    for t in targets:
        dim, alpha = (config.conv_dim, config.effective_conv_alpha) if t.conv3x3 else (config.dim, config.alpha)
        lora = LoRAModule(t.module, dim, alpha, config.dropout, config.rank_dropout, config.module_dropout)
        network.add(t, lora)
    return network


def create_network(bundle: BundleLike, config: NetworkConfig) -> LoRANetwork:
    """A fresh network for a ModelBundle; its tensors live on the base layers' devices, in fp32."""
    return create_network_for(bundle.arch, bundle.unet, list(bundle.text_encoders), config)
