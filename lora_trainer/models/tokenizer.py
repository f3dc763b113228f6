"""CLIP BPE tokenization and the 75-token chunking SD1.5/SDXL conditioning is built from.

The BPE is open_clip's `SimpleTokenizer`, whose vocabulary file ships inside the open_clip
package, so nothing is downloaded. CLIP-L and bigG share this vocabulary; they differ only
in the padding id (see `CLIP_L_PAD_ID`, `BIGG_PAD_ID`).

Text cleaning is open_clip's ('lower': ftfy, HTML-unescape, collapse whitespace, lower case).
transformers' CLIPTokenizer (used by kohya and by A1111 for CLIP-L) does the same except the
HTML unescape, so only captions containing entities such as `&amp;` tokenize differently.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

BOS_ID = 49406  # <start_of_text>
EOS_ID = 49407  # <end_of_text>; the largest id, which is why pooling can use argmax(ids)
CONTEXT_LENGTH = 77  # CLIP's positions: BOS + 75 tokens + EOS
CHUNK_TOKENS = CONTEXT_LENGTH - 2

# Padding after the EOS. Why they differ: SD1.5 was trained with transformers' CLIPTokenizer,
# which pads CLIP-L with EOS (pad = eos = 49407, kohya's tokenizer1, A1111's id_pad = id_end);
# SDXL's bigG was trained through open_clip.tokenize, which pads with 0 (kohya's tokenizer2 has
# pad "!" = 0, A1111 sets id_pad = 0 for it). Attention is causal, so padding never changes the
# states before it, but the padded positions' own states are part of the context the UNet
# cross-attends to: the padding must match what the checkpoint was trained with.
CLIP_L_PAD_ID = EOS_ID
BIGG_PAD_ID = 0


class ClipTokenizer:
    """CLIP BPE text -> token ids without BOS/EOS (the conditioners add them per chunk)."""

    def __init__(self):
        # Imported here so importing lora_trainer.models stays cheap.
        from open_clip.tokenizer import SimpleTokenizer

        self._bpe = SimpleTokenizer()
        # The ids come from the vocabulary, which every open_clip has: `sot_token_id` and
        # `eot_token_id` only arrived in open_clip 2.23, and AUTOMATIC1111 1.10 pins 2.20.
        bos, eos = (self._bpe.encoder.get(t) for t in ("<start_of_text>", "<end_of_text>"))
        if bos != BOS_ID or eos != EOS_ID:
            raise RuntimeError(f"open_clip's tokenizer has BOS/EOS {bos}/{eos}, expected {BOS_ID}/{EOS_ID}")

    def encode(self, text: str) -> list[int]:
        """All BPE ids of `text` (no BOS/EOS, no truncation)."""
        return self._bpe.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._bpe.decode([i for i in ids if i not in (BOS_ID, EOS_ID)]).strip()


def chunks_needed(n_tokens: int) -> int:
    """Chunks of 75 tokens for n_tokens; an empty caption still takes one chunk (BOS EOS pad...)."""
    return max(1, -(-n_tokens // CHUNK_TOKENS))


def make_chunks(ids: Sequence[int], n_chunks: int, pad_id: int) -> list[list[int]]:
    """Cut ids into n_chunks rows of 77: BOS, up to 75 ids, EOS, then pad_id to 77.

    Plain 75-token cuts (kohya's max_token_length), not the WebUI's comma-aware chunking: see
    conditioning.py for why. Ids beyond n_chunks*75 are dropped (truncation, as kohya). Chunks
    past the end of the text are empty (BOS EOS pad...), which is exactly what kohya's padding
    and A1111's empty chunks produce.
    """
    rows = []
    for c in range(n_chunks):
        part = list(ids[c * CHUNK_TOKENS:(c + 1) * CHUNK_TOKENS])
        row = [BOS_ID] + part + [EOS_ID]
        rows.append(row + [pad_id] * (CONTEXT_LENGTH - len(row)))
    return rows


def chunk_batch(
    token_lists: Sequence[Sequence[int]], pad_id: int, max_chunks: int = 3, n_chunks: int | None = None
) -> torch.Tensor:
    """Token lists -> (B, k, 77) long ids.

    k = n_chunks if given, else the chunks the longest caption needs, capped at max_chunks
    (every caption in a batch needs the same k so the contexts stack).
    """
    if max_chunks < 1:
        raise ValueError(f"max_chunks must be at least 1, got {max_chunks}")
    k = n_chunks if n_chunks is not None else min(max_chunks, max((chunks_needed(len(t)) for t in token_lists), default=1))
    return torch.tensor([make_chunks(t, k, pad_id) for t in token_lists], dtype=torch.long).view(len(token_lists), k, CONTEXT_LENGTH)
