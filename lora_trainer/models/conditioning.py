"""Captions -> the UNet's text conditioning for SD1.5 and SDXL, as the WebUIs and kohya compute it.

Chunking: a caption longer than 75 tokens is cut into plain 75-token chunks (kohya's
max_token_length), each wrapped as BOS ... EOS pad to 77 and encoded separately; the chunk
outputs are concatenated along the sequence. We use kohya's plain cuts, not A1111's
comma-aware chunking, because training should see the conditioning kohya trains with (so a
LoRA behaves like a kohya-trained one) and A1111's backtracking depends on a WebUI setting
(`comma_padding_backtrack`) and on its prompt parser (emphasis, BREAK) that captions do not use.
The number of chunks k is the fewest the longest caption of a batch needs, up to max_chunks
(3 = the guide's max token length 225), which is what A1111 feeds the UNet at generation.
`kohya_layout=True` instead reproduces kohya's tensor exactly: always max_chunks chunks, and the
inner BOS/EOS states dropped (n*75+2 tokens: 77 / 152 / 227).

Prompt emphasis (`(word:1.2)`, BREAK) is read only when a caller asks (`emphasis=True`, standalone
generation): see prompt_weights.py. Without it, text is tokenized as it is, as kohya trains.

Nothing here disables autograd: text-encoder LoRA training backpropagates through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from lora_trainer.models.clip_text import ClipTextModel
from lora_trainer.models.prompt_weights import (
    emphasize,
    weighted_chunk_batch,
    weighted_tokens,
)
from lora_trainer.models.tokenizer import (
    BIGG_PAD_ID,
    CLIP_L_PAD_ID,
    CONTEXT_LENGTH,
    ClipTokenizer,
    chunk_batch,
)
from lora_trainer.models.unet import timestep_embedding

SIZE_EMBED_DIM = 256  # sgm ConcatTimestepEmbedderND(outdim=256), per scalar
SDXL_POOLED_DIM = 1280
SDXL_VECTOR_DIM = SDXL_POOLED_DIM + 6 * SIZE_EMBED_DIM  # 2816 = the UNet's adm_in_channels


def join_chunks(states: torch.Tensor, kohya_layout: bool = False) -> torch.Tensor:
    """(B, k, 77, C) per-chunk states -> (B, 77k, C), or kohya's (B, 75k+2, C).

    kohya keeps the BOS state of the first chunk, the 75 middle states of every chunk and the
    last state of the last chunk.
    """
    B, k, T, C = states.shape
    if not kohya_layout:
        return states.reshape(B, k * T, C)
    middle = states[:, :, 1:T - 1].reshape(B, k * (T - 2), C)
    return torch.cat([states[:, 0, :1], middle, states[:, -1, T - 1:]], dim=1)


def _encode_chunks(encoder: ClipTextModel, ids: torch.Tensor):
    """(B, k, 77) ids -> the encoder's output for all B*k chunks in one batch."""
    B, k, T = ids.shape
    return encoder(ids.reshape(B * k, T).to(encoder.device))


class SD15TextConditioner:
    """SD1.5: captions -> context (B, 77k, 768) from CLIP-L, with the WebUI's CLIP skip.

    clip_skip 1 = the last layer after final_layer_norm; clip_skip N = the output of layer -N
    with final_layer_norm re-applied (A1111 `CLIP_stop_at_last_layers`, kohya `--clip_skip`).
    """

    def __init__(
        self,
        clip_l: ClipTextModel,
        tokenizer: ClipTokenizer,
        clip_skip: int = 1,
        max_chunks: int = 3,
        kohya_layout: bool = False,
    ):
        layers = clip_l.config.layers
        if not 1 <= clip_skip <= layers:
            raise ValueError(f"clip_skip must be between 1 and {layers}, got {clip_skip}")
        if max_chunks < 1:
            raise ValueError(f"max_chunks must be at least 1, got {max_chunks}")
        self.clip_l = clip_l
        self.tokenizer = tokenizer
        self.clip_skip = clip_skip
        self.max_chunks = max_chunks
        self.kohya_layout = kohya_layout

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """texts -> (B, k, 77) ids, CLIP-L padding (EOS)."""
        k = self.max_chunks if self.kohya_layout else None
        return chunk_batch([self.tokenizer.encode(t) for t in texts], CLIP_L_PAD_ID, self.max_chunks, k)

    def tokenize_weighted(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """texts with A1111 emphasis -> ids (B, k, 77) and token weights (B, k, 77)."""
        k = self.max_chunks if self.kohya_layout else None
        chunks = [weighted_tokens(t, self.tokenizer.encode) for t in texts]
        return weighted_chunk_batch(chunks, CLIP_L_PAD_ID, self.max_chunks, k)

    def encode_ids(self, ids: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """(B, k, 77) ids -> context (B, 77k, 768) (or kohya's 75k+2 tokens); weights (B, k, 77)
        apply A1111's emphasis to each chunk."""
        B, k, T = ids.shape
        out = _encode_chunks(self.clip_l, ids)
        if self.clip_skip == 1:
            h = out.last_hidden_state
        else:
            h = self.clip_l.text_model.final_layer_norm(out.hidden_states[-self.clip_skip])
        h = h.reshape(B, k, T, -1)
        if weights is not None:
            h = emphasize(h, weights)
        return join_chunks(h, self.kohya_layout)

    def __call__(self, texts: Sequence[str], emphasis: bool = False) -> torch.Tensor:
        """emphasis=True reads `(word:1.2)`, `[word]` and BREAK as A1111 does (generation only)."""
        if emphasis:
            return self.encode_ids(*self.tokenize_weighted(texts))
        return self.encode_ids(self.tokenize(texts))


class SDXLText(NamedTuple):
    context: torch.Tensor  # (B, 77k, 2048): CLIP-L penultimate (768) ++ bigG penultimate (1280)
    pooled: torch.Tensor  # (B, 1280): bigG final-LN state at the first chunk's EOS, projected


class SDXLTextConditioner:
    """SDXL: captions -> (context, pooled). Feed pooled to sdxl_size_vector for the UNet's `y`.

    Both encoders use the penultimate layer without final LN (sgm's `layer_idx=11` / 'penultimate',
    kohya's hidden_states[11] / [-2]); CLIP skip does not apply (kohya ignores it for SDXL).
    The pooled vector is taken from the first chunk only, as kohya and A1111 do.
    """

    def __init__(
        self,
        clip_l: ClipTextModel,
        clip_bigg: ClipTextModel,
        tokenizer: ClipTokenizer,
        max_chunks: int = 3,
        kohya_layout: bool = False,
    ):
        if clip_bigg.text_projection is None:
            raise ValueError("clip_bigg has no text_projection; build it with ClipTextConfig.clip_bigg()")
        if max_chunks < 1:
            raise ValueError(f"max_chunks must be at least 1, got {max_chunks}")
        self.clip_l = clip_l
        self.clip_bigg = clip_bigg
        self.tokenizer = tokenizer
        self.max_chunks = max_chunks
        self.kohya_layout = kohya_layout

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """texts -> (ids_l, ids_g), each (B, k, 77): the same chunks, padded with EOS and 0 respectively."""
        tokens = [self.tokenizer.encode(t) for t in texts]
        k = self.max_chunks if self.kohya_layout else None
        ids_l = chunk_batch(tokens, CLIP_L_PAD_ID, self.max_chunks, k)
        ids_g = chunk_batch(tokens, BIGG_PAD_ID, self.max_chunks, ids_l.shape[1])
        return ids_l, ids_g

    def tokenize_weighted(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """texts with A1111 emphasis -> (ids_l, ids_g, weights), each (B, k, 77)."""
        chunks = [weighted_tokens(t, self.tokenizer.encode) for t in texts]
        k = self.max_chunks if self.kohya_layout else None
        ids_l, weights = weighted_chunk_batch(chunks, CLIP_L_PAD_ID, self.max_chunks, k)
        ids_g, _ = weighted_chunk_batch(chunks, BIGG_PAD_ID, self.max_chunks, ids_l.shape[1])
        return ids_l, ids_g, weights

    def encode_ids(self, ids_l: torch.Tensor, ids_g: torch.Tensor, weights: torch.Tensor | None = None) -> SDXLText:
        """weights (B, k, 77): A1111's emphasis, applied to each encoder's states on its own (each of
        A1111's SDXL embedders rescales its own mean); the pooled vector is never weighted."""
        B, k, T = ids_l.shape
        # 1. CLIP-L: penultimate layer, no final LN
        h_l = _encode_chunks(self.clip_l, ids_l).hidden_states[-2].reshape(B, k, T, -1)
        # 2. bigG: penultimate layer, no final LN; pooled = projected final-LN EOS state
        out_g = _encode_chunks(self.clip_bigg, ids_g)
        h_g = out_g.hidden_states[-2].reshape(B, k, T, -1)
        pooled = out_g.projected.reshape(B, k, -1)[:, 0]
        if weights is not None:
            h_l, h_g = emphasize(h_l, weights), emphasize(h_g, weights)
        # 3. channels side by side: 768 + 1280 = 2048
        h = torch.cat([h_l.to(h_g.device), h_g], dim=-1)
        return SDXLText(join_chunks(h, self.kohya_layout), pooled)

    def __call__(self, texts: Sequence[str], negative: bool = False, emphasis: bool = False) -> SDXLText:
        """negative=True: when every text is "", context and pooled are zeros, as A1111/Forge do for an
        empty SDXL negative prompt (sgm force_zero_embeddings). Training captions, including dropped
        (empty) ones, are encoded normally, as kohya does. emphasis=True reads `(word:1.2)`, `[word]`
        and BREAK as A1111 does (generation only)."""
        cond = self.encode_ids(*(self.tokenize_weighted(texts) if emphasis else self.tokenize(texts)))
        if negative and all(t == "" for t in texts):
            return SDXLText(torch.zeros_like(cond.context), torch.zeros_like(cond.pooled))
        return cond


def size_embedding(values: torch.Tensor, dim: int = SIZE_EMBED_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """(B, n) scalars -> (B, n*dim) float32 sinusoidal features, [cos | sin] per scalar.

    sgm's timestep_embedding as used by ConcatTimestepEmbedderND (and kohya's get_size_embeddings):
    frequencies exp(-ln(max_period) * j / (dim/2)) for j in 0..dim/2-1, cos first, then sin.
    """
    B, n = values.shape
    return timestep_embedding(values.reshape(B * n), dim, max_period).reshape(B, n * dim)


def _size_rows(value, batch: int, device: torch.device, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32, device=device)
    if t.shape == (2,):
        t = t.expand(batch, 2)
    if t.shape != (batch, 2):
        raise ValueError(f"{name} must be a pair or a ({batch}, 2) tensor, got shape {tuple(t.shape)}")
    return t


def sdxl_size_vector(
    pooled: torch.Tensor,
    original_size: tuple[int, int] | torch.Tensor,
    crop: tuple[int, int] | torch.Tensor,
    target_size: tuple[int, int] | torch.Tensor,
) -> torch.Tensor:
    """SDXL's `y` (B, 2816) = pooled (1280) ++ 256-d embeddings of
    original (h, w), crop (top, left), target (h, w), in that order.

    Each size argument is one pair for the whole batch or a (B, 2) tensor (per-sample buckets).
    Pairs are (height, width) and (top, left), as sgm's conditioner and A1111 order them.
    """
    B = pooled.shape[0]
    sizes = torch.cat(
        [
            _size_rows(original_size, B, pooled.device, "original_size"),
            _size_rows(crop, B, pooled.device, "crop"),
            _size_rows(target_size, B, pooled.device, "target_size"),
        ],
        dim=1,
    )  # (B, 6)
    return torch.cat([pooled, size_embedding(sizes).to(pooled.dtype)], dim=1)


__all__ = [
    "CONTEXT_LENGTH",
    "SDXL_VECTOR_DIM",
    "SD15TextConditioner",
    "SDXLText",
    "SDXLTextConditioner",
    "join_chunks",
    "sdxl_size_vector",
    "size_embedding",
]
