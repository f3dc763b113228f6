"""A1111 prompt emphasis: the parser, weighted chunks, the Original rescale, SDXL, standalone generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lora_trainer.errors import StudioError
from lora_trainer.models.clip_text import ClipTextConfig
from lora_trainer.models.conditioning import SD15TextConditioner, SDXLTextConditioner
from lora_trainer.models.prompt_weights import (
    BREAK_PIECE,
    emphasize,
    parse_emphasis,
    weighted_chunk_batch,
    weighted_tokens,
)
from lora_trainer.models.tokenizer import (
    BIGG_PAD_ID,
    BOS_ID,
    CLIP_L_PAD_ID,
    EOS_ID,
    ClipTokenizer,
)
from tests import test_models_conditioning as conditioning_tests

# ---- the parser ------------------------------------------------------------------------------------

# The input -> output pairs of the docstring of A1111 1.10's prompt_parser.parse_prompt_attention.
A1111_EXAMPLES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    (r"\(literal\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
]


@pytest.mark.parametrize("text,expected", A1111_EXAMPLES)
def test_parser_gives_a1111s_documented_outputs(text, expected):
    assert parse_emphasis(text) == expected  # exact floats: same multiplications in the same order


def test_parser_rules():
    assert parse_emphasis("[a]") == [("a", 1 / 1.1)]
    assert parse_emphasis("[[a]] b") == [("a", 1 / 1.1 / 1.1), (" b", 1.0)]
    assert parse_emphasis("((a:1.5))") == [("a", 1.5 * 1.1)]
    assert parse_emphasis("(a: 0.8 )") == [("a", 0.8)]
    assert parse_emphasis("") == [("", 1.0)]
    assert parse_emphasis(r"a \\ b \[c\]") == [("a \\ b [c]", 1.0)]
    assert parse_emphasis("a) b] c:d") == [("a) b] c:d", 1.0)]  # closings without an opening are text
    assert parse_emphasis("x:1.5) y") == [("x:1.5) y", 1.0)]  # a weight outside brackets is text
    assert parse_emphasis("[a") == [("a", 1 / 1.1)]
    # BREAK: a standalone word (surrounding spaces eaten), not part of a longer word
    assert parse_emphasis("a BREAK b") == [("a", 1.0), BREAK_PIECE, ("b", 1.0)]
    assert parse_emphasis("BREAKING news") == [("BREAKING news", 1.0)]
    assert parse_emphasis("(a) BREAK (b)") == [("a", 1.1), ("", 1.0), BREAK_PIECE, ("", 1.0), ("b", 1.1)]
    with pytest.raises(StudioError, match="not a number"):
        parse_emphasis("(a:1.2.3)")


def test_weighted_tokens_split_per_piece_and_chunk_at_75_and_break():
    tok = ClipTokenizer()
    chunks = weighted_tokens("a (red:1.5) cat", tok.encode)
    assert chunks == [(tok.encode("a red cat"), [1.0, 1.5, 1.0])]
    long = weighted_tokens("(x) " * 80, tok.encode)  # one token per "x": 75 + 5
    assert [len(ids) for ids, _ in long] == [75, 5] and set(long[0][1]) == {1.1}
    assert len(weighted_tokens("a BREAK b", tok.encode)) == 2
    assert len(weighted_tokens("a BREAK", tok.encode)) == 1  # a BREAK at the end adds no chunk
    assert weighted_tokens("BREAK b", tok.encode)[0] == ([], [])  # an empty first chunk, as A1111
    assert weighted_tokens("", tok.encode) == [([], [])]


def test_weighted_chunk_batch_layout():
    ids, w = weighted_chunk_batch([[([7, 8], [1.5, 1.0])], [([9], [1.0]), ([10], [0.5])]], BIGG_PAD_ID)
    assert ids.shape == w.shape == (2, 2, 77)
    assert ids[0, 0, :5].tolist() == [BOS_ID, 7, 8, EOS_ID, BIGG_PAD_ID]
    assert ids[0, 1, :3].tolist() == [BOS_ID, EOS_ID, BIGG_PAD_ID]  # past the end: an empty chunk
    assert w[0, 0, :4].tolist() == [1.0, 1.5, 1.0, 1.0] and w[1, 1, 1].item() == 0.5
    assert float(w.sum()) == 4 * 77 + 0.5 - 0.5  # every other weight is 1
    capped, _ = weighted_chunk_batch([[([1], [1.0])] * 5], CLIP_L_PAD_ID, max_chunks=3)
    assert capped.shape == (1, 3, 77)


def test_emphasize_scales_rows_and_keeps_the_chunk_mean():
    z = torch.rand(1, 2, 77, 6) + 0.5
    w = torch.ones(1, 2, 77)
    assert emphasize(z, w) is z
    w[0, 0, 3] = 1.5
    out = emphasize(z, w)
    ratio = out / z
    s = ratio[0, 0, 0, 0]
    assert torch.allclose(ratio[0, 0, 3], 1.5 * s.expand(6), rtol=1e-5)
    assert torch.allclose(ratio[0, 0, torch.arange(77) != 3], s.expand(76, 6), rtol=1e-5)
    assert torch.allclose(out[0, 0].mean(), z[0, 0].mean(), rtol=1e-6)
    assert torch.equal(out[0, 1], z[0, 1])  # an unweighted chunk: ratio exactly 1


# ---- conditioners ----------------------------------------------------------------------------------


# The tokenizer fixture and the random text encoders of the conditioning tests.
random_model = conditioning_tests.random_model
tokenizer = conditioning_tests.tokenizer


@pytest.fixture(scope="module")
def sd15(tokenizer) -> SD15TextConditioner:
    return SD15TextConditioner(random_model(ClipTextConfig.tiny(), 1), tokenizer)


@pytest.fixture(scope="module")
def sdxl(tokenizer) -> SDXLTextConditioner:
    cfg_g = ClipTextConfig(width=48, layers=4, heads=4, mlp_width=96, hidden_act="gelu", projection_dim=40)
    return SDXLTextConditioner(random_model(ClipTextConfig.tiny(), 1), random_model(cfg_g, 2), tokenizer)


PLAIN = ["a photo of a cat", ", ".join(["blue eyes"] * 40), "", r"name \(series\)"]


@torch.no_grad()
def test_no_emphasis_is_bit_identical_to_the_plain_path(sd15, sdxl):
    plain = PLAIN[:3]
    assert torch.equal(sd15(plain, emphasis=True), sd15(plain))
    a, b = sdxl(plain, emphasis=True), sdxl(plain)
    assert torch.equal(a.context, b.context) and torch.equal(a.pooled, b.pooled)
    # escapes read by the parser give the literal text's conditioning
    assert torch.equal(sd15([PLAIN[3]], emphasis=True), sd15(["name (series)"]))
    # weights of 1.0 given explicitly change nothing either
    ids = sd15.tokenize(plain)
    assert torch.equal(sd15.encode_ids(ids, torch.ones(ids.shape)), sd15.encode_ids(ids))


@torch.no_grad()
def test_sd15_weight_scales_only_its_tokens_and_keeps_the_mean(sd15):
    ids, w = sd15.tokenize_weighted(["a (red:1.5) cat"])
    assert torch.equal(ids, sd15.tokenize(["a red cat"]))
    assert w[0, 0, :4].tolist() == [1.0, 1.0, 1.5, 1.0]
    plain, weighted = sd15.encode_ids(ids), sd15(["a (red:1.5) cat"], emphasis=True)
    ratio = weighted[0] / plain[0]  # (77, C)
    s = ratio[0, 0]
    assert torch.allclose(ratio[2], 1.5 * s.expand_as(ratio[2]), rtol=1e-4)
    others = torch.arange(77) != 2
    assert torch.allclose(ratio[others], s.expand_as(ratio[others]), rtol=1e-4)
    assert torch.allclose(weighted.mean(), plain.mean(), rtol=1e-5)
    assert not torch.allclose(weighted, plain)


@torch.no_grad()
def test_break_starts_a_new_chunk(sd15, tokenizer):
    ids, w = sd15.tokenize_weighted(["a cat BREAK red"])
    assert ids.shape == (1, 2, 77) and bool((w == 1).all())
    assert ids[0, 0, :4].tolist() == [BOS_ID, *tokenizer.encode("a cat"), EOS_ID]
    assert ids[0, 1, :3].tolist() == [BOS_ID, *tokenizer.encode("red"), EOS_ID]
    ctx = sd15(["a cat BREAK red"], emphasis=True)
    assert ctx.shape == (1, 154, sd15.clip_l.config.width)
    assert torch.allclose(ctx[:, 77:], sd15(["red"]), atol=1e-6)  # the second chunk is encoded on its own
    assert sd15(["a cat BREAK red"]).shape[1] == 77  # without emphasis BREAK is a word


@torch.no_grad()
def test_sdxl_weights_each_encoder_on_its_own_and_keeps_pooled(sdxl):
    plain = sdxl(["a cat"])
    weighted = sdxl(["(a:1.5) cat"], emphasis=True)
    assert torch.equal(weighted.pooled, plain.pooled)
    width_l = sdxl.clip_l.config.width
    for part in (slice(0, width_l), slice(width_l, None)):  # CLIP-L, then bigG channels
        p, q = plain.context[0, :, part], weighted.context[0, :, part]
        ratio = q / p
        assert torch.allclose(ratio[1], 1.5 * ratio[0], rtol=1e-4)
        assert torch.allclose(q.mean(), p.mean(), rtol=1e-5)  # each encoder's own mean is kept
    # the empty SDXL negative stays zeros with emphasis on
    neg = sdxl([""], negative=True, emphasis=True)
    assert not neg.context.any() and not neg.pooled.any()


# ---- standalone generation -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    from lora_trainer.host.standalone import StandaloneHost
    from lora_trainer.models.demo import write_demo_checkpoint

    return StandaloneHost(write_demo_checkpoint(tmp_path_factory.mktemp("pw") / "tiny15.safetensors"))


def test_standalone_generate_reads_emphasis(host):
    from lora_trainer.host.base import GenerationRequest
    from lora_trainer.models.sampler import generate

    def image(prompt: str) -> np.ndarray:
        req = GenerationRequest(prompt, seed=3, steps=2, width=64, height=64)
        return np.asarray(host.generate(req)[0]).astype(np.int16)

    def plain_image(prompt: str, emphasis: bool) -> np.ndarray:
        img = generate(host.bundle(), prompt, "", 3, 2, 7.0, 64, 64, "DPM++ 2M", "karras", emphasis=emphasis)
        return np.asarray(img).astype(np.int16)

    assert not np.array_equal(image("(x:1.3)"), image("x"))
    assert np.array_equal(image(r"\(x\)"), plain_image("(x)", emphasis=False))
    assert np.array_equal(image("x"), plain_image("x", emphasis=False))
