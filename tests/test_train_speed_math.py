"""The speed-ups of the training step change no numbers beyond float32 rounding.

The hook's delta with the scale folded into the up weight is compared with the textbook formula base(x) + up(down(x)) * multiplier * alpha / dim,
outputs and LoRA gradients, on Linear, 1x1 and 3x3 convs, and through a whole tiny UNet.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lora_trainer.models.unet import UNet, UNetConfig
from lora_trainer.network.modules import LoRAModule
from lora_trainer.network.network import NetworkConfig, _add_delta, create_network_for
from tests.torch_features import cpu_half


def _reference_delta(lora: LoRAModule, x: torch.Tensor) -> torch.Tensor:
    """The pre-fusion formula: up(down(x)) * multiplier * alpha / dim, in the LoRA dtype."""
    h = lora.lora_down(x.to(lora.lora_down.weight.dtype))
    return lora.lora_up(h) * (lora.multiplier * float(lora.alpha) / lora.dim)


def _hooked(lora: LoRAModule, base: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the network's forward hook returns for `base(x)`."""
    return _add_delta(lora, base, (x,), base(x))


def _grads(params) -> list[torch.Tensor]:
    out = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return out


@pytest.mark.parametrize(
    "base, shape",
    [
        (nn.Linear(24, 40), (2, 7, 24)),  # tokens
        (nn.Linear(24, 40, bias=False), (3, 24)),
        (nn.Conv2d(24, 40, 1), (2, 24, 5, 6)),  # SD1.5 proj_in / proj_out
        (nn.Conv2d(24, 40, 3, padding=1, stride=2), (2, 24, 9, 8)),  # LoCon 3x3
    ],
)
@pytest.mark.parametrize("multiplier", [1.0, 0.7])
def test_hook_output_and_grads_equal_the_formula(base, shape, multiplier):
    torch.manual_seed(0)
    base.requires_grad_(False)
    lora = LoRAModule(base, dim=4, alpha=3.0)
    nn.init.normal_(lora.lora_up.weight)  # up starts at zero; give the delta a value
    lora.multiplier = multiplier
    x = torch.randn(shape, requires_grad=True)
    target = torch.randn_like(base(x))
    params = list(lora.parameters())

    out = _hooked(lora, base, x)
    ((out - target) ** 2).sum().backward()
    got, got_x = _grads(params), x.grad.clone()
    x.grad = None

    want_out = base(x) + _reference_delta(lora, x)
    ((want_out - target) ** 2).sum().backward()
    want, want_x = _grads(params), x.grad.clone()

    assert out.shape == want_out.shape
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_x, want_x, rtol=1e-5, atol=1e-4)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(lora(x), _reference_delta(lora, x), rtol=1e-5, atol=1e-6)


@cpu_half
def test_fp16_base_without_autocast_keeps_the_base_dtype():
    base = nn.Linear(16, 8).half().requires_grad_(False)
    lora = LoRAModule(base, dim=4, alpha=4.0)
    nn.init.normal_(lora.lora_up.weight)
    x = torch.randn(3, 16).half()
    out = _hooked(lora, base, x)
    assert out.dtype == torch.float16
    want = (base(x).float() + _reference_delta(lora, x)).half()
    torch.testing.assert_close(out, want, rtol=2e-3, atol=2e-3)


def test_bf16_autocast_matches_the_formula():
    base = nn.Linear(32, 16).requires_grad_(False)
    lora = LoRAModule(base, dim=4, alpha=2.0)
    nn.init.normal_(lora.lora_up.weight)
    x = torch.randn(2, 5, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _hooked(lora, base, x)
        want = base(x) + _reference_delta(lora, x).to(torch.bfloat16)
    assert out.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), want.float(), rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert lora.lora_up.weight.grad is not None and lora.lora_up.weight.grad.dtype == torch.float32


@pytest.mark.parametrize("checkpointing", [False, True])
def test_tiny_unet_step_equals_the_formula(checkpointing):
    """A whole UNet forward and backward through the hooks equals the same UNet run with the
    pre-fusion formula in the hooks (outputs and every LoRA gradient)."""
    torch.manual_seed(0)
    unet = UNet(UNetConfig.tiny_sd15()).requires_grad_(False)
    net = create_network_for("sd15", unet, [], NetworkConfig(dim=4, alpha=2.0, conv_dim=4, train_text_encoder=False))
    for _, lora in net.loras():
        nn.init.normal_(lora.lora_up.weight, std=0.05)
    x = torch.randn(2, 4, 16, 16)
    t = torch.tensor([10, 700])
    ctx = torch.randn(2, 7, 32)
    params = list(net.parameters())
    unet.set_gradient_checkpointing(checkpointing)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = unet(x, t, ctx)
        F.mse_loss(out, x).backward()
        return out.detach(), _grads(params)

    with net.attached():
        got_out, got = run()
    handles = [
        net.target(key).module.register_forward_hook(
            lambda m, a, o, lora=lora: o + _reference_delta(lora, a[0]).to(o.dtype)
        )
        for key, lora in net.loras()
    ]
    try:
        want_out, want = run()
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(got_out, want_out, rtol=1e-5, atol=1e-5)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_checkpointing_skips_only_blocks_that_save_no_memory():
    """SD1.5: conv_in, the Downsamples and the attention-free 4x4 level run without recompute;
    SDXL (attention on its deepest level): only conv_in and the Downsamples."""
    with torch.device("meta"):
        sd15, sdxl = UNet(UNetConfig.sd15()), UNet(UNetConfig.sdxl())

    def plain(unet):
        return ([i for i, b in enumerate(unet.input_blocks) if not b.checkpointed],
                [i for i, b in enumerate(unet.output_blocks) if not b.checkpointed], unet.middle_block.checkpointed)

    assert plain(sd15) == ([0, 3, 6, 9, 10, 11], [0, 1, 2], True)
    assert plain(sdxl) == ([0, 3, 6], [], True)
