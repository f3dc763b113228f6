"""The network on a real ModelBundle over borrowed checkpoint tensors (fp16, bigG q/k/v as views of
the fused in_proj): training, saving and applying never write to a borrowed tensor."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lora_trainer.models.bundle import bundle_from_state_dict
from lora_trainer.models.demo import demo_state_dict
from lora_trainer.network import (
    NetworkConfig,
    apply_loras,
    create_network,
    save_network,
)
from tests.torch_features import cpu_half


def _borrowed(arch: str):
    tensors = demo_state_dict(arch, seed=0, dtype=torch.float16)
    copies = {k: (v.data_ptr(), v.clone()) for k, v in tensors.items()}
    return tensors, copies, bundle_from_state_dict(tensors, name=f"demo-{arch}")


def _assert_untouched(tensors, copies):
    for k, v in tensors.items():
        ptr, copy = copies[k]
        assert v.data_ptr() == ptr and torch.equal(v, copy), k


def _unet_call(bundle, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = bundle.unet.config
    x = torch.randn(1, 4, 8, 8, generator=g).half()
    ctx = torch.randn(1, 5, cfg.context_dim, generator=g).half()
    y = torch.randn(1, cfg.adm_in_channels, generator=g).half() if cfg.adm_in_channels else None
    return lambda: bundle.unet(x, torch.tensor([400]), ctx, y)


@cpu_half
@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_train_save_apply_on_borrowed_fp16_tensors(tmp_path, arch):
    tensors, copies, bundle = _borrowed(arch)
    if arch == "sdxl":  # bigG's q/k/v are views into the checkpoint's fused in_proj_weight
        q = bundle.text_encoders[1][1].text_model.encoder.layers[0].self_attn.q_proj.weight
        fused = tensors["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"]
        assert q.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
    net = create_network(bundle, NetworkConfig(dim=4, alpha=2, conv_dim=2, conv_alpha=1))
    assert {p.dtype for p in net.parameters()} == {torch.float32}  # LoRA weights stay fp32 over an fp16 base
    ids = torch.tensor([[49406, 320, 1125, 49407, 49407]])
    call = _unet_call(bundle)
    with torch.no_grad():
        base_out = call()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    with net.attached():  # one step: lora_up leaves zero, so the delta is non-zero from here on
        te_out = sum(te(ids).last_hidden_state.float().square().mean() for _, te in bundle.text_encoders)
        loss = call().float().square().mean() + te_out
        loss.backward()
        opt.step()
        opt.zero_grad()
    _assert_untouched(tensors, copies)
    assert all(p.grad is None for p in bundle.unet.parameters())
    path = save_network(net, tmp_path / f"{arch}-01.safetensors").path
    outs = {}
    for mode in ("hooks", "merge"):
        with torch.no_grad(), apply_loras(bundle, [(path, 1.0)], mode=mode):
            outs[mode] = call().float()
            for _, te in bundle.text_encoders:
                te(ids)
        assert (outs[mode] - base_out.float()).abs().max() > 1e-3, mode
        _assert_untouched(tensors, copies)
        with torch.no_grad():
            assert torch.equal(call(), base_out), mode
    # hooks and merge agree (fp16 base: merged weights round to fp16, hence the tolerance)
    torch.testing.assert_close(outs["merge"], outs["hooks"], atol=2e-2, rtol=2e-2)
    assert isinstance(bundle.unet.input_blocks[0][0].weight, nn.Parameter)
