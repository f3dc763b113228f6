"""Loaded models in the WebUIs' attribute layouts, assembled from OUR tiny model code (tests only).

- `a1111_sd15(hijacked)`: `.model.diffusion_model` our UNet, `.first_stage_model` our VAE,
  `.cond_stage_model.transformer` our CLIP-L; hijacked=True puts the text encoder and its token
  embedding behind `.wrapped` as modules/sd_hijack.py does.
- `a1111_sdxl(hijacked)`: `.conditioner.embedders[0].transformer` CLIP-L (HF names),
  `.conditioner.embedders[1].model` bigG in open_clip layout (packed in_proj, text_projection).
- `forge(arch)`: `forge_objects.unet.model.diffusion_model`, `.vae.first_stage_model`,
  `.clip.cond_stage_model.clip_l/clip_g.transformer` (HF), each tensor an inference tensor, with
  an empty `lora_loader.backup` (Forge's clean copies of merged weights).

The tensors are those of `lora_trainer.models.demo.demo_state_dict` (float32), so a bundle built
from the file and one borrowed from the fake model hold equal values.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from lora_trainer.models import checkpoint as ckpt
from lora_trainer.models.clip_text import ClipTextConfig, ClipTextModel, open_clip_to_hf
from lora_trainer.models.demo import demo_state_dict
from lora_trainer.models.unet import UNet, UNetConfig
from lora_trainer.models.vae import AutoencoderKL, VAEConfig


def tree(tensors: dict[str, torch.Tensor]) -> nn.Module:
    """A module holding `tensors` as parameters at their dotted names (open_clip's layout)."""
    root = nn.Module()
    for key, t in tensors.items():
        *path, leaf = key.split(".")
        m = root
        for name in path:
            if not hasattr(m, name):
                m.add_module(name, nn.Module())
            m = getattr(m, name)
        m.register_parameter(leaf, nn.Parameter(t, requires_grad=False))
    return root


def _load(module: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    module.load_state_dict(tensors, strict=True)
    return module


class Wrapper(nn.Module):
    """The hijack's wrapper: the real module sits at `.wrapped`."""

    def __init__(self, wrapped: nn.Module):
        super().__init__()
        self.wrapped = wrapped


class FakeModel(nn.Module):
    """Stands for ldm LatentDiffusion / sgm DiffusionEngine with the flags set_model_type sets."""

    def __init__(self, arch: str):
        super().__init__()
        self.is_sd1 = arch == "sd15"
        self.is_sdxl = arch == "sdxl"
        self.is_sd2 = self.is_sd3 = False
        self.sd_checkpoint_info = types.SimpleNamespace(name_for_extra=f"tiny-{arch}", filename=f"/models/tiny-{arch}.safetensors")
        self.sd_model_hash = "0123456789"
        self.parameterization = "eps"
        self.lowvram = False


def _unet(sd: dict, arch: str) -> UNet:
    cfg = UNetConfig.tiny_sd15() if arch == "sd15" else UNetConfig.tiny_sdxl()
    return _load(UNet(cfg), ckpt.part(sd, ckpt.UNET_PREFIX))


def _vae(sd: dict, arch: str) -> AutoencoderKL:
    return _load(AutoencoderKL(VAEConfig.tiny(0.18215 if arch == "sd15" else 0.13025)), ckpt.part(sd, ckpt.VAE_PREFIX))


def _clip_l(sd: dict, prefix: str) -> ClipTextModel:
    t = ckpt.part(sd, prefix)
    t.pop("text_model.embeddings.position_ids", None)
    return _load(ClipTextModel(ClipTextConfig.tiny()), t)


def _hide_token_embedding(te: nn.Module, path: str) -> None:
    """`token_embedding` -> EmbeddingsWithFixes(token_embedding): the weight's key gains `.wrapped`."""
    *parent, leaf = path.split(".")
    owner = te
    for name in parent:
        owner = getattr(owner, name)
    setattr(owner, leaf, Wrapper(getattr(owner, leaf)))


def a1111_sd15(hijacked: bool = True, seed: int = 0) -> FakeModel:
    sd = demo_state_dict("sd15", seed, torch.float32)
    m = FakeModel("sd15")
    m.model = nn.Module()
    m.model.diffusion_model = _unet(sd, "sd15")
    m.first_stage_model = _vae(sd, "sd15")
    frozen = nn.Module()  # ldm FrozenCLIPEmbedder
    frozen.transformer = _clip_l(sd, ckpt.SD15_TE_PREFIX)
    if hijacked:
        _hide_token_embedding(frozen.transformer, "text_model.embeddings.token_embedding")
        m.cond_stage_model = Wrapper(frozen)
    else:
        m.cond_stage_model = frozen
    return m


def a1111_sdxl(hijacked: bool = True, seed: int = 0) -> FakeModel:
    sd = demo_state_dict("sdxl", seed, torch.float32)
    m = FakeModel("sdxl")
    m.model = nn.Module()
    m.model.diffusion_model = _unet(sd, "sdxl")
    m.first_stage_model = _vae(sd, "sdxl")
    e0 = nn.Module()
    e0.transformer = _clip_l(sd, ckpt.SDXL_TE1_PREFIX)
    e1 = nn.Module()
    e1.model = tree(ckpt.part(sd, ckpt.SDXL_TE2_PREFIX))
    if hijacked:
        _hide_token_embedding(e0.transformer, "text_model.embeddings.token_embedding")
        _hide_token_embedding(e1.model, "token_embedding")
        e0, e1 = Wrapper(e0), Wrapper(e1)
    m.conditioner = nn.Module()
    m.conditioner.embedders = nn.ModuleList([e0, e1, nn.Identity(), nn.Identity(), nn.Identity()])
    m.conditioner.wrapped = nn.Module()  # extend_sdxl adds an empty one
    return m


def forge(arch: str, seed: int = 0, storage_dtype=torch.float32) -> FakeModel:
    """Forge's layout; every tensor is made under inference mode, as Forge loads models."""
    sd = demo_state_dict(arch, seed, torch.float32)
    with torch.inference_mode():
        m = FakeModel(arch)
        unet = types.SimpleNamespace()
        kmodel = nn.Module()
        kmodel.diffusion_model = _unet(sd, arch)
        kmodel.predictor = types.SimpleNamespace(prediction_type="epsilon")
        kmodel.storage_dtype = storage_dtype
        kmodel.lora_loader = types.SimpleNamespace(backup={})
        unet.model = kmodel
        clip_sd = {}
        if arch == "sd15":
            clip_sd["clip_l"] = _clip_l(sd, ckpt.SD15_TE_PREFIX)
        else:
            clip_sd["clip_l"] = _clip_l(sd, ckpt.SDXL_TE1_PREFIX)
            cfg = ClipTextConfig.tiny(projection_dim=32, hidden_act="gelu")
            hf = open_clip_to_hf(sd, cfg, ckpt.SDXL_TE2_PREFIX)
            clip_sd["clip_g"] = _load(ClipTextModel(cfg), {k: v.contiguous() for k, v in hf.items()})
        cond = nn.ModuleDict()
        for name, te in clip_sd.items():
            integrated = nn.Module()  # backend/nn/clip.py IntegratedCLIP
            integrated.transformer = te
            integrated.logit_scale = nn.Parameter(torch.tensor(4.6055))
            cond[name] = integrated
        clip = types.SimpleNamespace(cond_stage_model=cond)
        vae = types.SimpleNamespace(first_stage_model=_vae(sd, arch))
        m.forge_objects = types.SimpleNamespace(unet=unet, clip=clip, vae=vae)
        m.current_lora_hash = str([])
    return m


def webui_modules(sd_model) -> list[nn.Module]:
    """The modules a host borrows from, in either layout."""
    if hasattr(sd_model, "forge_objects"):
        f = sd_model.forge_objects
        return [f.unet.model.diffusion_model, f.vae.first_stage_model, *[c.transformer for c in f.clip.cond_stage_model.values()]]
    te = sd_model.cond_stage_model if sd_model.is_sd1 else sd_model.conditioner
    return [sd_model.model.diffusion_model, sd_model.first_stage_model, te]
