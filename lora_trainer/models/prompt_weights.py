"""A1111 prompt emphasis for standalone generation: `(word)`, `[word]`, `(word:1.3)` and BREAK.

What AUTOMATIC1111 1.10 does with its default "Emphasis: Original" setting
(prompt_parser.parse_prompt_attention, sd_hijack_clip.tokenize_line / process_tokens):

1. `parse_emphasis` splits the prompt into (text, weight) pieces: `(a)` multiplies by 1.1,
   `[a]` divides by 1.1, `(a:1.5)` multiplies by 1.5, nesting multiplies, `\\(` `\\)` `\\[` `\\]`
   `\\\\` are the literal characters, brackets left open are closed at the end of the prompt, and
   a standalone `BREAK` becomes the marker piece ("BREAK", -1.0).
2. `weighted_tokens` tokenizes each piece on its own and gives every token its piece's weight,
   in chunks of 75; BREAK ends the current chunk (the rest of it is padding).
3. After the text encoder, `emphasize` multiplies each chunk's hidden states (77, C) by the
   token weights and rescales them so the chunk's mean is what it was.

Only generation parses prompts. Training captions are read as plain text (kohya's default), so
`(` in a caption is a token there, as in the checkpoint kohya trains.

Left out on purpose: A1111's comma backtracking at chunk borders (our chunks are plain 75-token
cuts, see conditioning.py) and textual-inversion embeddings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch

from ..errors import StudioError
from .tokenizer import CHUNK_TOKENS, make_chunks

ROUND_MULTIPLIER = 1.1  # A1111: "(abc) increases attention to abc by a multiplier of 1.1"
SQUARE_MULTIPLIER = 1 / 1.1
BREAK_PIECE = ("BREAK", -1.0)  # A1111's marker for a chunk break (a weight no text can get)

# One lexical unit of the prompt, tried in this order (the order decides `\\]` vs `]`, `:1.2)` vs `:`).
_UNIT = re.compile(
    r"""
      \\[()\[\]\\]              # escaped bracket or backslash -> that character
    | \\                        # any other backslash -> dropped, as A1111 does
    | [(\[]                     # opening bracket
    | :\s*([+-]?[.\d]+)\s*\)    # ":1.3)" closes a round bracket with an explicit weight
    | [)\]]                     # closing bracket
    | [^\\()\[\]:]+             # plain text
    | :                         # a colon that does not start a weight
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)


def is_break(piece: tuple[str, float]) -> bool:
    return piece[0] == BREAK_PIECE[0] and piece[1] == BREAK_PIECE[1]


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """A prompt -> [(text, weight), ...] exactly as A1111's parse_prompt_attention returns it.

    Weights of adjacent pieces that compare equal are merged into one piece; an empty prompt
    gives [("", 1.0)]. A1111's quirks are kept so both make the same pieces: a closing bracket
    without an opening one is text, a lone backslash disappears, and a BREAK inside brackets
    gets its weight multiplied and is then ordinary text.
    """
    pieces: list[list] = []  # [text, weight], mutable: closing a bracket rescales the pieces since it opened
    round_open: list[int] = []  # index into pieces where each open "(" began
    square_open: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for m in _UNIT.finditer(text):
        unit, weight = m.group(0), m.group(1)
        if unit.startswith("\\"):
            pieces.append([unit[1:], 1.0])
        elif unit == "(":
            round_open.append(len(pieces))
        elif unit == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open:
            try:
                factor = float(weight)
            except ValueError:
                raise StudioError(
                    f"The emphasis weight {weight!r} in the prompt {text!r} is not a number.",
                    "Write a weight as a decimal number, e.g. (red hair:1.2).",
                ) from None
            scale_from(round_open.pop(), factor)
        elif unit == ")" and round_open:
            scale_from(round_open.pop(), ROUND_MULTIPLIER)
        elif unit == "]" and square_open:
            scale_from(square_open.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(_BREAK.split(unit)):
                if i > 0:
                    pieces.append(list(BREAK_PIECE))
                pieces.append([part, 1.0])

    # Brackets never closed apply to the end of the prompt (innermost last, as A1111 orders it).
    for start in round_open:
        scale_from(start, ROUND_MULTIPLIER)
    for start in square_open:
        scale_from(start, SQUARE_MULTIPLIER)

    if not pieces:
        pieces = [["", 1.0]]
    merged = [pieces[0]]
    for piece in pieces[1:]:
        if piece[1] == merged[-1][1]:
            merged[-1][0] += piece[0]
        else:
            merged.append(piece)
    return [(t, w) for t, w in merged]


def weighted_tokens(text: str, encode: Callable[[str], list[int]]) -> list[tuple[list[int], list[float]]]:
    """A prompt -> its chunks of at most 75 (token ids, weights), without BOS/EOS.

    Each piece is tokenized separately (as A1111 does: `(red)hair` is "red" + "hair"). A BREAK
    closes the current chunk; a prompt always has at least one chunk, and a BREAK at the very end
    adds none (A1111's tokenize_line).
    """
    chunks: list[tuple[list[int], list[float]]] = []
    ids: list[int] = []
    weights: list[float] = []
    for piece in parse_emphasis(text):
        if is_break(piece):
            chunks.append((ids, weights))
            ids, weights = [], []
            continue
        for token in encode(piece[0]):
            if len(ids) == CHUNK_TOKENS:
                chunks.append((ids, weights))
                ids, weights = [], []
            ids.append(token)
            weights.append(piece[1])
    if ids or not chunks:
        chunks.append((ids, weights))
    return chunks


def weighted_chunk_batch(
    chunk_lists: Sequence[Sequence[tuple[list[int], list[float]]]],
    pad_id: int,
    max_chunks: int = 3,
    n_chunks: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per prompt chunk lists -> ids (B, k, 77) long and weights (B, k, 77) float32.

    Rows are laid out as tokenizer.make_chunks lays them out (BOS, ids, EOS, pad_id...); BOS, EOS,
    padding and chunks past a prompt's end weigh 1.0. k = n_chunks if given, else the most chunks
    any prompt has, capped at max_chunks (later chunks are dropped, as plain prompts are truncated).
    """
    if max_chunks < 1:
        raise ValueError(f"max_chunks must be at least 1, got {max_chunks}")
    k = n_chunks if n_chunks is not None else min(max_chunks, max((len(c) for c in chunk_lists), default=1))
    all_ids, all_weights = [], []
    for chunks in chunk_lists:
        chunks = list(chunks[:k]) + [([], [])] * (k - len(chunks[:k]))
        for ids, weights in chunks:
            row = make_chunks(ids, 1, pad_id)[0]
            all_ids.append(row)
            all_weights.append([1.0] + list(weights) + [1.0] * (len(row) - 1 - len(weights)))
    B = len(chunk_lists)
    ids_t = torch.tensor(all_ids, dtype=torch.long).view(B, k, -1)
    return ids_t, torch.tensor(all_weights, dtype=torch.float32).view(B, k, -1)


def emphasize(states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111's Original emphasis: (B, k, 77, C) states * (B, k, 77) token weights, each chunk
    then rescaled so the mean of its (77, C) states is unchanged.

    A1111 takes the mean over its whole batch of one chunk; we take it per prompt, so a prompt's
    conditioning does not depend on what it is batched with (A1111 batches copies of one prompt,
    where the two agree). Computed in float32 and returned in the states' dtype. All weights 1.0
    return `states` itself, so an unweighted prompt is bit-identical to the plain path.
    """
    if weights.shape != states.shape[:-1]:
        raise ValueError(f"weights {tuple(weights.shape)} do not match states {tuple(states.shape)} without channels")
    if bool((weights == 1.0).all()):
        return states
    z = states.float()
    w = weights.to(z.device, torch.float32).unsqueeze(-1)  # (B, k, 77, 1)
    old_mean = z.mean(dim=(-2, -1), keepdim=True)  # (B, k, 1, 1)
    z = z * w
    new_mean = z.mean(dim=(-2, -1), keepdim=True)
    return (z * (old_mean / new_mean)).to(states.dtype)


__all__ = [
    "BREAK_PIECE",
    "emphasize",
    "is_break",
    "parse_emphasis",
    "weighted_chunk_batch",
    "weighted_tokens",
]
