"""SD1.5 / SDXL text conditioning: shapes, clip skip, chunking, pooled vector and size embeddings."""

from __future__ import annotations

import math

import pytest
import torch

from lora_trainer.models.clip_text import ClipTextConfig, ClipTextModel
from lora_trainer.models.conditioning import (
    SDXL_VECTOR_DIM,
    SD15TextConditioner,
    SDXLTextConditioner,
    join_chunks,
    sdxl_size_vector,
    size_embedding,
)
from lora_trainer.models.tokenizer import (
    BIGG_PAD_ID,
    BOS_ID,
    CLIP_L_PAD_ID,
    EOS_ID,
    ClipTokenizer,
    make_chunks,
)

SHORT = "a photo of a cat"
# 40 tags of one to three tokens each: 80 tokens with the commas -> 2 chunks
MEDIUM = ", ".join(["blue eyes"] * 40)
LONG = ", ".join(["blue eyes"] * 70)  # 140+ tokens -> 3 chunks
HUGE = ", ".join(["blue eyes"] * 200)  # truncated to 3 chunks


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer()


def random_model(cfg: ClipTextConfig, seed: int) -> ClipTextModel:
    torch.manual_seed(seed)
    model = ClipTextModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def clip_l() -> ClipTextModel:
    return random_model(ClipTextConfig.tiny(), 1)


@pytest.fixture(scope="module")
def clip_g() -> ClipTextModel:
    # Different width from clip_l so the concatenation order is visible: 32 + 48 = 80 channels.
    cfg = ClipTextConfig(width=48, layers=4, heads=4, mlp_width=96, hidden_act="gelu", projection_dim=40)
    return random_model(cfg, 2)


def test_token_counts(tokenizer):
    assert len(tokenizer.encode(SHORT)) <= 75
    assert 75 < len(tokenizer.encode(MEDIUM)) <= 150
    assert 150 < len(tokenizer.encode(LONG)) <= 225
    assert len(tokenizer.encode(HUGE)) > 225


# ---------------------------------------------------------------------------------------------
# SD1.5


@torch.no_grad()
def test_sd15_context_shapes_follow_the_longest_caption(clip_l, tokenizer):
    cond = SD15TextConditioner(clip_l, tokenizer)
    assert cond([SHORT]).shape == (1, 77, 32)
    assert cond([SHORT, MEDIUM]).shape == (2, 154, 32)
    assert cond([LONG, SHORT]).shape == (2, 231, 32)
    assert cond([HUGE]).shape == (1, 231, 32)
    assert SD15TextConditioner(clip_l, tokenizer, max_chunks=1)([LONG]).shape == (1, 77, 32)
    assert cond([""]).shape == (1, 77, 32)


@torch.no_grad()
def test_sd15_chunks_are_encoded_separately(clip_l, tokenizer):
    cond = SD15TextConditioner(clip_l, tokenizer)
    context = cond([MEDIUM])
    chunks = torch.tensor(make_chunks(tokenizer.encode(MEDIUM), 2, CLIP_L_PAD_ID))
    assert chunks[1, 0] == BOS_ID and chunks[1, -1] == EOS_ID
    expected = clip_l(chunks).last_hidden_state  # (2, 77, 32)
    torch.testing.assert_close(context[0, :77], expected[0])
    torch.testing.assert_close(context[0, 77:], expected[1])


@torch.no_grad()
def test_sd15_clip_skip(clip_l, tokenizer):
    ids = torch.tensor(make_chunks(tokenizer.encode(SHORT), 1, CLIP_L_PAD_ID))
    out = clip_l(ids)
    skip1 = SD15TextConditioner(clip_l, tokenizer, clip_skip=1)([SHORT])
    skip2 = SD15TextConditioner(clip_l, tokenizer, clip_skip=2)([SHORT])
    torch.testing.assert_close(skip1, out.last_hidden_state)
    torch.testing.assert_close(skip1, clip_l.text_model.final_layer_norm(out.hidden_states[-1]))
    # clip skip 2 = hidden_states[-2] with the final layer norm re-applied (A1111 and kohya)
    torch.testing.assert_close(skip2, clip_l.text_model.final_layer_norm(out.hidden_states[-2]))
    assert not torch.allclose(skip1, skip2)
    with pytest.raises(ValueError, match="clip_skip must be between 1 and 3"):
        SD15TextConditioner(clip_l, tokenizer, clip_skip=4)


@torch.no_grad()
def test_kohya_layout(clip_l, tokenizer):
    webui = SD15TextConditioner(clip_l, tokenizer, max_chunks=3)([MEDIUM])
    kohya = SD15TextConditioner(clip_l, tokenizer, max_chunks=3, kohya_layout=True)([MEDIUM])
    assert kohya.shape == (1, 3 * 75 + 2, 32)  # always max_chunks chunks, inner BOS/EOS dropped
    chunks = torch.tensor(make_chunks(tokenizer.encode(MEDIUM), 3, CLIP_L_PAD_ID))
    states = clip_l(chunks).last_hidden_state  # (3, 77, C)
    torch.testing.assert_close(kohya[0, 0], states[0, 0])
    torch.testing.assert_close(kohya[0, 1:76], states[0, 1:76])
    torch.testing.assert_close(kohya[0, 76:151], states[1, 1:76])
    torch.testing.assert_close(kohya[0, 151:226], states[2, 1:76])
    torch.testing.assert_close(kohya[0, 226], states[2, 76])
    torch.testing.assert_close(webui[0], states[:2].reshape(154, 32))
    assert join_chunks(torch.zeros(2, 1, 77, 5), kohya_layout=True).shape == (2, 77, 5)


def test_sd15_is_differentiable(clip_l, tokenizer):
    """Text-encoder LoRA training backpropagates through the conditioner."""
    cond = SD15TextConditioner(clip_l, tokenizer, clip_skip=2)
    cond([SHORT, MEDIUM]).sum().backward()
    grad = clip_l.text_model.encoder.layers[0].self_attn.q_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    clip_l.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------------------
# SDXL


@torch.no_grad()
def test_sdxl_context_and_pooled(clip_l, clip_g, tokenizer):
    cond = SDXLTextConditioner(clip_l, clip_g, tokenizer)
    ids_l, ids_g = cond.tokenize([SHORT, MEDIUM])
    assert ids_l.shape == ids_g.shape == (2, 2, 77)
    n = len(tokenizer.encode(SHORT))
    assert ids_l[0, 0, n + 1:].eq(EOS_ID).all()  # CLIP-L pads with EOS
    assert ids_g[0, 0, n + 1] == EOS_ID and ids_g[0, 0, n + 2:].eq(BIGG_PAD_ID).all()  # bigG with 0
    assert ids_g[0, 1].tolist() == [BOS_ID, EOS_ID] + [0] * 75

    context, pooled = cond([SHORT, MEDIUM])
    assert context.shape == (2, 154, 80) and pooled.shape == (2, 40)
    out_l = clip_l(ids_l[1])
    out_g = clip_g(ids_g[1])
    # penultimate layers, no final layer norm, CLIP-L channels first
    torch.testing.assert_close(context[1, :77, :32], out_l.hidden_states[-2][0])
    torch.testing.assert_close(context[1, 77:, :32], out_l.hidden_states[-2][1])
    torch.testing.assert_close(context[1, 77:, 32:], out_g.hidden_states[-2][1])
    # pooled from the first chunk only: final-LN bigG state at its EOS, projected
    eos = int(ids_g[1, 0].argmax())
    assert ids_g[1, 0, eos] == EOS_ID
    expected = clip_g.text_projection(clip_g.text_model.final_layer_norm(out_g.hidden_states[-1][0, eos]))
    torch.testing.assert_close(pooled[1], expected)


@torch.no_grad()
def test_sdxl_lengths_and_kohya_layout(clip_l, clip_g, tokenizer):
    assert SDXLTextConditioner(clip_l, clip_g, tokenizer)([LONG]).context.shape == (1, 231, 80)
    assert SDXLTextConditioner(clip_l, clip_g, tokenizer)([HUGE]).context.shape == (1, 231, 80)
    kohya = SDXLTextConditioner(clip_l, clip_g, tokenizer, kohya_layout=True)
    assert kohya([SHORT]).context.shape == (1, 227, 80)


@torch.no_grad()
def test_sdxl_empty_negative_is_zeroed(clip_l, clip_g, tokenizer):
    cond = SDXLTextConditioner(clip_l, clip_g, tokenizer)
    neg = cond(["", ""], negative=True)
    assert neg.context.shape == (2, 77, 80) and neg.pooled.shape == (2, 40)
    assert not neg.context.any() and not neg.pooled.any()
    # empty training captions and mixed batches are encoded normally (kohya / A1111)
    assert cond([""]).pooled.abs().sum() > 0
    assert cond(["", SHORT], negative=True).pooled[0].abs().sum() > 0


def test_sdxl_requires_a_projection(clip_l, tokenizer):
    with pytest.raises(ValueError, match="text_projection"):
        SDXLTextConditioner(clip_l, clip_l, tokenizer)


# ---------------------------------------------------------------------------------------------
# SDXL size vector


def test_size_embedding_numbers():
    emb = size_embedding(torch.tensor([[1024.0, 0.0]]))
    assert emb.shape == (1, 512) and emb.dtype == torch.float32
    # [cos | sin] of 1024 * 10000^(-j/128), j = 0..127
    assert emb[0, 0].item() == pytest.approx(0.9873536182198484, abs=1e-4)  # cos(1024)
    assert emb[0, 128].item() == pytest.approx(-0.15853338004399595, abs=1e-4)  # sin(1024)
    assert emb[0, 1].item() == pytest.approx(-0.5376103157307843, abs=1e-4)  # cos(1024 * 10000^(-1/128))
    assert emb[0, 127].item() == pytest.approx(math.cos(1024 * 10000 ** (-127 / 128)), abs=1e-5)
    assert emb[0, 256:384].eq(1).all() and emb[0, 384:].eq(0).all()  # the value 0: cos 1, sin 0


def test_size_embedding_equals_diffusers_time_proj():
    """diffusers' SDXL UNet embeds the same six numbers with Timesteps(256, flip_sin_to_cos=True, 0)."""
    get_timestep_embedding = pytest.importorskip("diffusers.models.embeddings").get_timestep_embedding

    values = torch.tensor([[1216.0, 832.0, 64.0, 0.0, 1024.0, 768.0]])
    ref = get_timestep_embedding(values.flatten(), 256, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(size_embedding(values), ref.reshape(1, 6 * 256))


def test_sdxl_size_vector_layout():
    pooled = torch.randn(2, 1280, dtype=torch.float16)
    y = sdxl_size_vector(pooled, (1024, 768), (0, 32), (896, 640))
    assert y.shape == (2, SDXL_VECTOR_DIM) == (2, 2816) and y.dtype == torch.float16
    assert torch.equal(y[:, :1280], pooled)
    expected = size_embedding(torch.tensor([[1024.0, 768, 0, 32, 896, 640]])).half()
    assert torch.equal(y[0, 1280:], expected[0]) and torch.equal(y[1, 1280:], expected[0])
    assert y[0, 1280].item() == pytest.approx(math.cos(1024), abs=1e-3)  # original height first
    assert y[0, 1280 + 256].item() == pytest.approx(math.cos(768), abs=1e-3)  # then original width
    assert y[0, 1280 + 512].item() == 1.0  # crop top 0

    per_sample = sdxl_size_vector(
        torch.zeros(2, 1280), torch.tensor([[1024, 768], [512, 512]]), (0, 0), torch.tensor([[1024, 768], [512, 512]])
    )
    assert per_sample[0, 1280].item() == pytest.approx(math.cos(1024), abs=1e-5)
    assert per_sample[1, 1280].item() == pytest.approx(math.cos(512), abs=1e-5)
    with pytest.raises(ValueError, match="crop must be a pair"):
        sdxl_size_vector(torch.zeros(2, 1280), (1, 1), torch.zeros(3, 2), (1, 1))

