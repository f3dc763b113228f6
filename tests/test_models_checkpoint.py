"""Checkpoint reading, architecture detection and refusals, and the zero-copy ModelBundle."""

from __future__ import annotations

import hashlib

import pytest
import torch

from lora_trainer.errors import StudioError
from lora_trainer.models import checkpoint as ckpt
from lora_trainer.models.bundle import bundle_from_state_dict, load_bundle, state_dict_of
from lora_trainer.models.demo import demo_state_dict, write_demo_checkpoint


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids oversubscription stalls."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def sd15():
    return demo_state_dict("sd15", seed=0)


@pytest.fixture(scope="module")
def sdxl():
    return demo_state_dict("sdxl", seed=0)


@pytest.fixture(scope="module")
def sd15_file(tmp_path_factory):
    return write_demo_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny15.safetensors", "sd15", seed=3)


def _refusal_text(tensors) -> str:
    with pytest.raises(StudioError) as e:
        ckpt.detect(tensors, name="x.safetensors")
    assert "x.safetensors" in e.value.message
    return e.value.message


# ---- detection


def test_detects_sd15_and_sdxl(sd15, sdxl):
    d = ckpt.detect(sd15)
    assert (d.arch, d.prediction, d.zero_terminal_snr, d.dtype) == ("sd15", "eps", False, torch.float16)
    d = ckpt.detect(sdxl)
    assert (d.arch, d.prediction, d.zero_terminal_snr) == ("sdxl", "eps", False)


def test_v_pred_and_ztsnr_markers_and_overrides(sdxl):
    marked = {**sdxl, "v_pred": torch.tensor([]), "ztsnr": torch.tensor([])}
    d = ckpt.detect(marked)
    assert (d.prediction, d.zero_terminal_snr) == ("v", True)
    assert ckpt.detect(sdxl, {"modelspec.prediction_type": "v"}).prediction == "v"
    d = ckpt.detect(marked, prediction="eps", zero_terminal_snr=False)
    assert (d.prediction, d.zero_terminal_snr) == ("eps", False)


def test_refuses_sd2(sd15):
    sd2 = {k.replace(ckpt.SD15_TE_PREFIX, ckpt.SD2_TE_PREFIX): v for k, v in sd15.items()}
    assert "2.x" in _refusal_text(sd2)
    # a 1024-wide context alone also means SD2
    ctx = {k: (torch.empty(v.shape[0], 1024, dtype=v.dtype, device="meta") if k.endswith("attn2.to_k.weight") else v)
           for k, v in sd15.items()}
    assert "2.x" in _refusal_text(ctx)


def test_refuses_sdxl_refiner(sdxl):
    refiner = {k.replace(ckpt.SDXL_TE2_PREFIX, ckpt.SDXL_REFINER_TE_PREFIX): v
               for k, v in sdxl.items() if not k.startswith(ckpt.SDXL_TE1_PREFIX)}
    assert "refiner" in _refusal_text(refiner)


def test_refuses_inpainting_and_pix2pix(sd15):
    key = ckpt.UNET_PREFIX + "input_blocks.0.0.weight"
    w = sd15[key]
    for ch, word in ((9, "inpainting"), (8, "pix2pix")):
        t = {**sd15, key: torch.empty(w.shape[0], ch, 3, 3, dtype=w.dtype)}
        assert word in _refusal_text(t)


def test_refuses_lora_vae_embedding_unet_only_and_unknown(sd15):
    lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
            "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0)}
    assert "LoRA" in _refusal_text(lora)
    vae = ckpt.part(sd15, ckpt.VAE_PREFIX)
    assert "VAE" in _refusal_text(vae)
    assert "embedding" in _refusal_text({"emb_params": torch.zeros(2, 768)})
    unet_only = {k: v for k, v in sd15.items() if k.startswith((ckpt.UNET_PREFIX, ckpt.VAE_PREFIX))}
    assert "without its text encoder" in _refusal_text(unet_only)
    assert "UNet on its own" in _refusal_text(ckpt.part(sd15, ckpt.UNET_PREFIX))
    assert "not a Stable Diffusion" in _refusal_text({"foo.weight": torch.zeros(1)})
    sd3 = {**sd15, ckpt.UNET_PREFIX + "x_embedder.proj.weight": torch.zeros(1)}
    assert "Stable Diffusion 3" in _refusal_text(sd3)


# ---- files


def test_truncated_random_and_text_files_name_the_file(tmp_path, sd15_file):
    data = sd15_file.read_bytes()
    cases = {
        "truncated.safetensors": data[: len(data) // 2],
        "random.safetensors": bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).to(torch.uint8).tolist()),
        "notes.ckpt": b"this is a text file\nnot a model\n",
        "truncated.ckpt": None,
    }
    torch.save({"state_dict": {"a": torch.zeros(1000)}}, tmp_path / "full.ckpt")
    cases["truncated.ckpt"] = (tmp_path / "full.ckpt").read_bytes()[:300]
    for name, payload in cases.items():
        p = tmp_path / name
        p.write_bytes(payload)
        with pytest.raises(StudioError) as e:
            ckpt.read_checkpoint(p)
        assert str(p) in e.value.message, (name, e.value.message)
    with pytest.raises(StudioError, match="does not exist"):
        ckpt.read_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(StudioError, match="text file"):
        ckpt.read_checkpoint(tmp_path / "notes.ckpt")


def test_ckpt_with_state_dict_wrapper_loads(tmp_path, sd15):
    p = tmp_path / "model.ckpt"
    torch.save({"state_dict": dict(sd15), "global_step": 1000}, p)
    tensors, meta = ckpt.read_checkpoint(p)
    assert meta == {} and tensors.keys() == sd15.keys()
    b = bundle_from_state_dict(tensors)
    assert b.arch == "sd15"


def test_old_clip_key_names_are_renamed(sd15):
    old = {k.replace(ckpt.SD15_TE_PREFIX + "text_model.", ckpt.SD15_TE_PREFIX): v for k, v in sd15.items()}
    b = bundle_from_state_dict(old)
    w = b.text_encoders[0][1].text_model.embeddings.token_embedding.weight
    assert w.data_ptr() == sd15[ckpt.SD15_TE_PREFIX + "text_model.embeddings.token_embedding.weight"].data_ptr()


def test_an_sd15_text_encoder_with_a_projection_builds_and_conditions_the_same(sd15):
    # Forge Neo builds SD1.5's CLIP-L with add_text_projection=True, so the lent tensors carry one
    width = sd15[ckpt.SD15_TE_PREFIX + "text_model.final_layer_norm.weight"].shape[0]
    projected = {**sd15, ckpt.SD15_TE_PREFIX + "text_projection.weight": torch.eye(width, dtype=torch.float16)}
    plain = bundle_from_state_dict(sd15).to(dtype=torch.float32)
    neo = bundle_from_state_dict(projected).to(dtype=torch.float32)
    assert neo.text_encoders[0][1].text_projection is not None
    torch.testing.assert_close(neo.encode_prompts(["a red circle"]).context, plain.encode_prompts(["a red circle"]).context,
                               rtol=0, atol=0)
    from lora_trainer.network.network import NetworkConfig, create_network

    names = [sorted(k for k, _ in create_network(b, NetworkConfig(dim=2, alpha=1)).loras()) for b in (plain, neo)]
    assert names[0] == names[1]  # kohya's layout: the projection is not a LoRA target


def test_wrong_shape_names_the_tensor(sd15):
    key = ckpt.UNET_PREFIX + "time_embed.2.bias"
    bad = {**sd15, key: torch.zeros(3, dtype=torch.float16)}
    with pytest.raises(StudioError, match="time_embed.2.bias"):
        bundle_from_state_dict(bad)


def test_model_hash_is_sha256_prefix(sd15_file):
    assert ckpt.model_hash(sd15_file) == hashlib.sha256(sd15_file.read_bytes()).hexdigest()[:10]


# ---- bundle


def test_demo_checkpoint_round_trip(sd15_file):
    tensors, _ = ckpt.read_checkpoint(sd15_file)
    b = load_bundle(sd15_file)
    assert (b.arch, b.prediction, b.name, b.dtype) == ("sd15", "eps", "tiny15", torch.float16)
    assert [p for p, _ in b.text_encoders] == ["lora_te"]
    assert b.vae_scale_factor == 0.18215
    back = state_dict_of(b)
    expected = {k: v for k, v in tensors.items() if not k.endswith("position_ids") and k not in ("betas", "alphas_cumprod")}
    assert back.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(back[k], v), k


def test_demo_is_deterministic_per_seed():
    a, b, c = (demo_state_dict("sd15", seed=s) for s in (1, 1, 2))
    k = ckpt.UNET_PREFIX + "input_blocks.0.0.weight"
    assert torch.equal(a[k], b[k]) and not torch.equal(a[k], c[k])


def test_bundle_borrows_tensors_without_copy(sd15_file, tmp_path):
    tensors, _ = ckpt.read_checkpoint(sd15_file)
    b = bundle_from_state_dict(tensors)
    parts = [(b.unet, ckpt.UNET_PREFIX), (b.vae, ckpt.VAE_PREFIX), (b.text_encoders[0][1], ckpt.SD15_TE_PREFIX)]
    n = 0
    for module, prefix in parts:
        for name, p in module.named_parameters():
            src = tensors[prefix + name]
            assert p.data_ptr() == src.data_ptr() and p.untyped_storage().data_ptr() == src.untyped_storage().data_ptr(), name
            assert not p.requires_grad
            n += 1
    assert n > 100


def test_sdxl_bundle_borrows_bigg_as_views(sdxl):
    b = bundle_from_state_dict(sdxl, name="tiny_xl")
    assert (b.arch, [p for p, _ in b.text_encoders], b.vae_scale_factor) == ("sdxl", ["lora_te1", "lora_te2"], 0.13025)
    te2 = b.text_encoders[1][1]
    fused = sdxl[ckpt.SDXL_TE2_PREFIX + "transformer.resblocks.0.attn.in_proj_weight"]
    layer = te2.text_model.encoder.layers[0].self_attn
    C = te2.config.width
    for j, lin in enumerate((layer.q_proj, layer.k_proj, layer.v_proj)):
        assert lin.weight.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
        assert lin.weight.data_ptr() == fused[j * C].data_ptr()
    proj = sdxl[ckpt.SDXL_TE2_PREFIX + "text_projection"]
    assert te2.text_projection.weight.data_ptr() == proj.data_ptr()
    unet_w = sdxl[ckpt.UNET_PREFIX + "label_emb.0.0.weight"]
    assert b.unet.label_emb[0][0].weight.data_ptr() == unet_w.data_ptr()


def test_load_bundle_casts_when_asked(sd15_file):
    b = load_bundle(sd15_file, dtype=torch.float32)
    assert b.dtype == torch.float32 and next(b.vae.parameters()).dtype == torch.float32


def test_encode_prompts_shapes(sdxl, sd15):
    # float32 as every host runs on a CPU (torch 2.1, A1111 1.10's, has no fp16 CPU kernels)
    b = bundle_from_state_dict(sdxl).to(dtype=torch.float32)
    c = b.encode_prompts(["a cat", "a dog"], width=64, height=96)
    assert c.context.shape == (2, 77, 64) and c.pooled.shape == (2, 32) and c.y.shape == (2, 32 + 1536)
    neg = b.encode_prompts([""], is_negative=True)
    assert neg.context.abs().sum() == 0 and neg.y[:, :32].abs().sum() == 0
    b15 = bundle_from_state_dict(sd15).to(dtype=torch.float32)
    c = b15.encode_prompts(["x " * 100])  # 100 tokens -> two chunks
    assert c.context.shape == (1, 154, 32) and c.y is None


def test_encode_decode_images_shapes(sd15):
    b = bundle_from_state_dict(sd15).to(dtype=torch.float32)
    img = torch.rand(1, 3, 64, 48) * 2 - 1
    lat = b.encode_images(img, torch.Generator().manual_seed(0))
    assert lat.shape == (1, 4, 8, 6)
    out = b.decode_latents(lat)
    assert out.shape == (1, 3, 64, 48) and out.min() >= -1 and out.max() <= 1


def test_native_size_reads_the_modelspec_resolution_and_else_the_family():
    from lora_trainer.models.checkpoint import native_size

    assert native_size("sd15", {"modelspec.resolution": "64x64"}) == (64, 64)
    assert native_size("sdxl", {"modelspec.resolution": "1024x768"}) == (1024, 768)
    assert native_size("sd15") == (512, 512) and native_size("sdxl", {}) == (1024, 1024)
    for junk in ("", "big", "0x0", "32x32", "64x"):  # unreadable or too small: the family's
        assert native_size("sd15", {"modelspec.resolution": junk}) == (512, 512)
