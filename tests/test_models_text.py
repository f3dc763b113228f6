"""Text encoders and tokenizer: equal to transformers / open_clip on random weights, real sizes on meta."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lora_trainer.errors import StudioError
from lora_trainer.models.clip_text import (
    SD15_CLIP_L_PREFIX,
    SDXL_BIGG_PREFIX,
    ClipTextConfig,
    ClipTextModel,
    clip_l_from_checkpoint,
    hf_keys,
    hf_to_open_clip,
    open_clip_keys,
    open_clip_to_hf,
)
from lora_trainer.models.tokenizer import (
    BIGG_PAD_ID,
    BOS_ID,
    CLIP_L_PAD_ID,
    EOS_ID,
    ClipTokenizer,
    chunk_batch,
    chunks_needed,
    make_chunks,
)
from tests.torch_features import cpu_half

PROMPTS = [
    "a photo of a cat",
    "1girl, solo, long hair, looking at viewer, blue eyes, (masterpiece:1.2), smile",
    "",
]


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer()


@pytest.fixture(scope="module")
def ids(tokenizer) -> torch.Tensor:
    """(3, 77) real CLIP-L-padded ids, one per prompt."""
    return chunk_batch([tokenizer.encode(p) for p in PROMPTS], CLIP_L_PAD_ID, max_chunks=1)[:, 0]


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter random (LayerNorm weights around 1) so a wrong bias or norm shows up."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            base = 1.0 if p.ndim == 1 and ("norm" in name or "ln_" in name) and name.endswith("weight") else 0.0
            p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
    return module


# ---------------------------------------------------------------------------------------------
# Equality with transformers (CLIP-L, and the HF names of bigG)


def hf_text_model(cfg: ClipTextConfig):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    hf_cfg = CLIPTextConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.width,
        intermediate_size=cfg.mlp_width,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        max_position_embeddings=cfg.max_positions,
        hidden_act=cfg.hidden_act,
        projection_dim=cfg.projection_dim or 512,
    )
    cls = CLIPTextModelWithProjection if cfg.projection_dim else CLIPTextModel
    return cls(hf_cfg).eval()


def hf_tensors(hf: nn.Module) -> dict[str, torch.Tensor]:
    """The HF model's state dict as a checkpoint stores it: transformers < 4.31 (A1111 1.10 pins
    4.30.2) keeps `position_ids` as a persistent buffer there; ours has none (positions are 0..T-1)."""
    sd = hf.state_dict()
    sd.pop("text_model.embeddings.position_ids", None)
    return sd


@pytest.mark.parametrize("cfg", [ClipTextConfig.tiny(), ClipTextConfig.tiny(projection_dim=24, hidden_act="gelu")])
def test_equals_transformers_on_random_weights(cfg, ids):
    torch.manual_seed(0)
    hf = randomize_(hf_text_model(cfg))
    ours = ClipTextModel(cfg).eval()
    ours.load_state_dict(clip_l_from_checkpoint(hf.state_dict(), "", cfg), strict=True)  # same names, nothing renamed

    with torch.no_grad():
        ref = hf(input_ids=ids, output_hidden_states=True)
        out = ours(ids)
    assert len(out.hidden_states) == cfg.layers + 1 == len(ref.hidden_states)
    for a, b in zip(out.hidden_states, ref.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
    if cfg.projection_dim:
        assert out.projected.shape == (3, 24)
        torch.testing.assert_close(out.projected, ref.text_embeds, atol=1e-5, rtol=1e-5)
    else:
        assert out.projected is None
        torch.testing.assert_close(out.pooled, ref.pooler_output, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Equality with open_clip (bigG layout) through the open_clip-format mapping


def open_clip_model(width=32, heads=4, layers=3, embed_dim=24, device=None):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=16)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=width, heads=heads, layers=layers)
    with torch.device(device or "cpu"):
        return CLIP(embed_dim=embed_dim, vision_cfg=vision, text_cfg=text).eval()


def text_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The open_clip model's tensors as an SDXL checkpoint stores them (visual tower deleted)."""
    return {SDXL_BIGG_PREFIX + k: v for k, v in model.state_dict().items() if not k.startswith("visual.")}


def test_bigg_equals_open_clip_after_mapping(ids):
    torch.manual_seed(0)
    oc = randomize_(open_clip_model())
    cfg = ClipTextConfig(width=32, layers=3, heads=4, mlp_width=128, hidden_act="gelu", projection_dim=24)
    with torch.device("meta"):
        ours = ClipTextModel(cfg)
    ours.load_state_dict(open_clip_to_hf(text_tensors(oc), cfg), assign=True, strict=True)
    ours.eval()
    ids_g = torch.where(ids == EOS_ID, torch.zeros_like(ids), ids)
    ids_g[torch.arange(3), ids.argmax(-1)] = EOS_ID  # open_clip padding: BOS text EOS 0 0 ...

    with torch.no_grad():
        # sgm's FrozenOpenCLIPEmbedder2: embeddings, resblocks with the causal mask, penultimate output.
        # open_clip < 2.23 (A1111 1.10 pins 2.20) runs its resblocks sequence-first: (T, B, C).
        x = oc.token_embedding(ids_g) + oc.positional_embedding
        seq_first = not getattr(oc.transformer, "batch_first", False)
        states = [x]
        x = x.transpose(0, 1) if seq_first else x
        for block in oc.transformer.resblocks:
            x = block(x, attn_mask=oc.attn_mask)
            states.append(x.transpose(0, 1) if seq_first else x)
        final = oc.ln_final(states[-1])
        projected = oc.encode_text(ids_g)
        out = ours(ids_g)
    torch.testing.assert_close(out.hidden_states[-2], states[-2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.last_hidden_state, final, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.projected, projected, atol=1e-5, rtol=1e-5)


def test_bigg_mapping_shares_storage_no_copy():
    oc = open_clip_model()
    tensors = text_tensors(oc)
    cfg = ClipTextConfig(width=32, layers=3, heads=4, mlp_width=128, hidden_act="gelu", projection_dim=24)
    with torch.device("meta"):
        ours = ClipTextModel(cfg)
    ours.load_state_dict(open_clip_to_hf(tensors, cfg), assign=True)
    C = 32
    for i in range(3):
        fused = tensors[f"{SDXL_BIGG_PREFIX}transformer.resblocks.{i}.attn.in_proj_weight"]
        bias = tensors[f"{SDXL_BIGG_PREFIX}transformer.resblocks.{i}.attn.in_proj_bias"]
        attn = ours.text_model.encoder.layers[i].self_attn
        for j, lin in enumerate((attn.q_proj, attn.k_proj, attn.v_proj)):
            assert lin.weight.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
            assert lin.weight.data_ptr() == fused.data_ptr() + j * C * C * fused.element_size()
            assert lin.bias.data_ptr() == bias.data_ptr() + j * C * bias.element_size()
    proj = tensors[SDXL_BIGG_PREFIX + "text_projection"]
    assert ours.text_projection.weight.data_ptr() == proj.data_ptr()
    assert ours.text_projection.weight.shape == (24, 32) and proj.shape == (32, 24)
    tok = tensors[SDXL_BIGG_PREFIX + "token_embedding.weight"]
    assert ours.text_model.embeddings.token_embedding.weight.data_ptr() == tok.data_ptr()


def test_open_clip_round_trip_is_exact():
    oc = open_clip_model()
    tensors = text_tensors(oc)
    tensors.pop(SDXL_BIGG_PREFIX + "logit_scale")
    cfg = ClipTextConfig(width=32, layers=3, heads=4, mlp_width=128, hidden_act="gelu", projection_dim=24)
    back = hf_to_open_clip(open_clip_to_hf(tensors, cfg), cfg)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(back[k], v), k
        assert back[k].is_contiguous()


def test_mapping_errors_name_the_key():
    oc = open_clip_model()
    tensors = text_tensors(oc)
    cfg = ClipTextConfig(width=32, layers=3, heads=4, mlp_width=128, hidden_act="gelu", projection_dim=24)
    del tensors[SDXL_BIGG_PREFIX + "transformer.resblocks.1.ln_2.bias"]
    tensors[SDXL_BIGG_PREFIX + "bogus"] = torch.zeros(1)
    with pytest.raises(StudioError, match=r"1 missing \(first: transformer.resblocks.1.ln_2.bias\).*bogus"):
        open_clip_to_hf(tensors, cfg)


def test_clip_l_from_checkpoint_strips_prefix_and_position_ids():
    cfg = ClipTextConfig.tiny()
    sd = ClipTextModel(cfg).state_dict()
    ckpt = {SD15_CLIP_L_PREFIX + k: v for k, v in sd.items()}
    ckpt[SD15_CLIP_L_PREFIX + "text_model.embeddings.position_ids"] = torch.arange(77.0)[None]
    ckpt["model.diffusion_model.out.0.weight"] = torch.zeros(4)
    out = clip_l_from_checkpoint(ckpt, SD15_CLIP_L_PREFIX, cfg)
    assert set(out) == set(sd)
    assert all(out[k] is ckpt[SD15_CLIP_L_PREFIX + k] for k in out)
    del ckpt[SD15_CLIP_L_PREFIX + "text_model.final_layer_norm.bias"]
    with pytest.raises(StudioError, match="final_layer_norm.bias"):
        clip_l_from_checkpoint(ckpt, SD15_CLIP_L_PREFIX, cfg)


# ---------------------------------------------------------------------------------------------
# Real sizes, on the meta device


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_real_clip_l_matches_transformers_on_meta():
    cfg = ClipTextConfig.clip_l()
    with torch.device("meta"):
        ours = ClipTextModel(cfg)
        hf = hf_text_model(cfg)
    assert n_params(ours) == n_params(hf) == 123_060_480
    ref = {k: v.shape for k, v in hf_tensors(hf).items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == ref
    assert "text_model.encoder.layers.11.self_attn.q_proj.weight" in ref
    assert all(p.device.type == "meta" for p in ours.parameters())


def test_real_bigg_matches_open_clip_on_meta():
    import open_clip

    cfg = ClipTextConfig.clip_bigg()
    oc_cfg = open_clip.get_model_config("ViT-bigG-14")
    with torch.device("meta"):
        oc = open_clip.model.CLIP(**oc_cfg)
        ours = ClipTextModel(cfg)
        hf = hf_text_model(cfg)  # CLIPTextModelWithProjection: kohya's lora_te2_ names come from it
    tensors = text_tensors(oc)
    tensors.pop(SDXL_BIGG_PREFIX + "logit_scale")
    assert {k[len(SDXL_BIGG_PREFIX):] for k in tensors} == set(open_clip_keys(cfg))
    assert sum(v.numel() for v in tensors.values()) == n_params(ours) == n_params(hf) == 694_659_840
    mapped = open_clip_to_hf(tensors, cfg)
    ours_shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert {k: v.shape for k, v in mapped.items()} == ours_shapes
    assert {k: v.shape for k, v in hf_tensors(hf).items()} == ours_shapes
    assert set(hf_keys(cfg)) == set(ours_shapes)


# ---------------------------------------------------------------------------------------------
# Precision and gradient checkpointing


@pytest.mark.parametrize("dtype", [pytest.param(torch.float16, marks=cpu_half), torch.bfloat16])
def test_half_precision_runs_close_to_fp32(dtype, ids):
    torch.manual_seed(0)
    model = randomize_(ClipTextModel(ClipTextConfig.tiny(projection_dim=16, hidden_act="gelu"))).eval()
    with torch.no_grad():
        ref = model(ids)
        out = model.to(dtype)(ids)
    assert out.last_hidden_state.dtype == dtype and out.projected.dtype == dtype
    assert torch.isfinite(out.last_hidden_state).all()
    tol = 2e-2 if dtype == torch.float16 else 1e-1
    torch.testing.assert_close(out.hidden_states[-2].float(), ref.hidden_states[-2], atol=tol, rtol=tol)
    torch.testing.assert_close(out.projected.float(), ref.projected, atol=tol, rtol=tol)


def test_gradient_checkpointing_gives_same_gradients(ids):
    torch.manual_seed(0)
    a = randomize_(ClipTextModel(ClipTextConfig.tiny())).train()
    b = ClipTextModel(ClipTextConfig.tiny()).train()
    b.load_state_dict(a.state_dict())
    b.set_gradient_checkpointing(True)
    for m in (a, b):
        m(ids).last_hidden_state.square().mean().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_too_many_tokens_is_an_error():
    model = ClipTextModel(ClipTextConfig.tiny())
    with pytest.raises(ValueError, match="78 tokens"):
        model(torch.zeros(1, 78, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# Tokenizer


def test_tokenizer_known_ids(tokenizer):
    assert tokenizer.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    assert tokenizer.encode("  A Photo  of a CAT ") == [320, 1125, 539, 320, 2368]
    assert tokenizer.encode("") == []
    assert tokenizer.decode([BOS_ID, 320, 1125, 539, 320, 2368, EOS_ID]) == "a photo of a cat"


def test_chunk_layout():
    tokens = list(range(1000, 1080))  # 80 tokens -> 2 chunks
    assert chunks_needed(0) == 1 and chunks_needed(75) == 1 and chunks_needed(76) == 2 and chunks_needed(225) == 3
    rows = make_chunks(tokens, 2, BIGG_PAD_ID)
    assert [len(r) for r in rows] == [77, 77]
    assert rows[0] == [BOS_ID] + tokens[:75] + [EOS_ID]
    assert rows[1] == [BOS_ID] + tokens[75:] + [EOS_ID] + [0] * 70
    empty = make_chunks([], 1, CLIP_L_PAD_ID)[0]
    assert empty == [BOS_ID] + [EOS_ID] * 76

    batch = chunk_batch([tokens, tokens[:3], list(range(2000, 2300))], CLIP_L_PAD_ID, max_chunks=3)
    assert batch.shape == (3, 3, 77)  # the 300-token caption is truncated to 225
    assert batch[2, 2, 75].item() == 2000 + 224 and batch[2, 2, 76].item() == EOS_ID
    assert batch[1, 1].tolist() == [BOS_ID] + [EOS_ID] * 76  # short captions get empty chunks
    assert chunk_batch([tokens], CLIP_L_PAD_ID, max_chunks=1).shape == (1, 1, 77)


def test_tokenizer_matches_transformers_clip_tokenizer(tokenizer, tmp_path):
    """transformers' CLIPTokenizer, built offline from open_clip's bundled vocabulary."""
    from transformers import CLIPTokenizer

    bpe = tokenizer._bpe
    vocab = dict(bpe.encoder)
    vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")
    vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges), encoding="utf-8")
    hf = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    texts = PROMPTS + [
        "masterpiece, best quality, 1boy, hatsune_miku, (smile:1.1), [blurry], 3d, école, 東京, emoji 🙂",
        "it's a dog's life... don't STOP!!",
    ]
    for text in texts:
        assert tokenizer.encode(text) == hf(text, add_special_tokens=False)["input_ids"], text
