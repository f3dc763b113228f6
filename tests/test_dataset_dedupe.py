"""Duplicate finding: md5 groups, union-find over similar pairs, keep policy, cache, trash and restore.

The open_clip path runs on a tiny random CLIP saved in the Hugging Face folder layout. A random
model says nothing about semantics: every pair of images scores high (about 0.98 here). What it
does show is that a resized and recompressed copy reaches the same model input after
preprocessing, so its embedding is nearly identical (>= 0.9998) while other images stay below 0.995.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from lora_trainer import trash
from lora_trainer.cli import main
from lora_trainer.dataset import dedupe as dd
from lora_trainer.dataset import images as images_mod
from lora_trainer.dataset.dedupe import (
    apply_plan,
    connected_groups,
    find_duplicates,
    similar_pairs,
)
from lora_trainer.errors import StudioError
from tests.tiny_models import write_tiny_open_clip


def smooth_image(seed: int, w: int, h: int) -> Image.Image:
    """A smooth random picture (a few colour blobs), so resizing keeps its look."""
    small = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BICUBIC)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return write_tiny_open_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture
def project(tmp_path):
    d = tmp_path / "proj"
    ds = d / "dataset"
    ds.mkdir(parents=True)
    smooth_image(1, 96, 72).save(ds / "a.png")
    shutil.copy(ds / "a.png", ds / "a_copy.png")  # exact copy
    smooth_image(2, 120, 90).save(ds / "b.jpg", quality=95)
    smooth_image(2, 120, 90).resize((60, 45), Image.BICUBIC).save(
        ds / "b_small.jpg", quality=70
    )  # resized + recompressed
    smooth_image(3, 90, 120).save(ds / "c.png")
    (ds / "a_copy.txt").write_bytes(b"copy caption\n")
    (ds / "b_small.txt").write_bytes(b"small caption")
    (ds / "b.txt").write_bytes(b"big caption")
    return d


class ColourEmbedder:
    """Injected embedder: the mean colour of each image as its vector; counts its calls."""

    key = "mean-colour"

    def __init__(self):
        self.calls = 0
        self.images = 0

    def __call__(self, images):
        self.calls += 1
        self.images += len(images)
        return np.stack(
            [np.asarray(im, np.float32).reshape(-1, 3).mean(0) for im in images]
        )


def _paths(plan):
    return [[(m.path, m.keep) for m in g.members] for g in plan.groups]


# ----------------------------------------------------------------------------------------------
# pure parts


def test_connected_groups_are_transitive():
    assert connected_groups(6, [(0, 1), (1, 2), (4, 5)]) == [[0, 1, 2], [4, 5]]
    assert connected_groups(3, []) == []
    assert connected_groups(5, [(4, 0), (3, 4)]) == [[0, 3, 4]]


def test_similar_pairs_blocks_and_threshold():
    rng = np.random.default_rng(0)
    e = rng.standard_normal((7, 5)).astype(np.float32)
    e[3] = e[0] + 0.01
    e[6] = e[0]
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    full = similar_pairs(e, 0.99)
    assert full == similar_pairs(e, 0.99, block=2)
    assert [(i, j) for i, j, _ in full] == [(0, 3), (0, 6), (3, 6)]
    assert full[1][2] == pytest.approx(1.0)


def test_keep_policy_largest_resolution_then_bytes_then_name():
    m = lambda path, w, h, b: dd.DedupeMember(path, w, h, b, "x", 1.0)
    members = [
        m("z.png", 100, 100, 10),
        m("y.png", 200, 50, 20),
        m("a.png", 100, 100, 10),
        m("b.png", 50, 50, 999),
    ]
    assert (
        min(members, key=dd.keep_order_key).path == "y.png"
    )  # same pixels as the 100x100s but more bytes
    members = [m("z.png", 100, 100, 10), m("a.png", 100, 100, 10)]
    assert min(members, key=dd.keep_order_key).path == "a.png"


# ----------------------------------------------------------------------------------------------
# find / apply / restore


def test_exact_duplicates_by_md5(project):
    plan = find_duplicates(project / "dataset", project / ".cache", near=False)
    assert _paths(plan) == [[("a.png", True), ("a_copy.png", False)]]
    assert plan.groups[0].exact and plan.threshold is None and plan.images == 5
    assert plan.groups[0].members[0].similarity == 1.0
    assert (plan.groups[0].members[0].width, plan.groups[0].members[0].height) == (
        96,
        72,
    )


def test_near_duplicates_with_injected_embeddings_and_cache(project, monkeypatch):
    ds = project / "dataset"
    emb = ColourEmbedder()
    plan = find_duplicates(ds, project / ".cache", threshold=0.999, embedder=emb)
    # b_small is a resized copy of b: the same mean colour; the larger b is kept
    assert _paths(plan) == [
        [("a.png", True), ("a_copy.png", False)],
        [("b.jpg", True), ("b_small.jpg", False)],
    ]
    assert not plan.groups[1].exact and plan.groups[1].members[1].similarity >= 0.999
    assert emb.images == 4  # a_copy shares a's content: embedded once
    assert list((project / ".cache" / "dedupe").iterdir())

    # second run: every embedding and md5 comes from the cache
    md5_calls = []
    real_md5 = images_mod.file_md5
    monkeypatch.setattr(
        images_mod, "file_md5", lambda p: md5_calls.append(p) or real_md5(p)
    )
    emb2 = ColourEmbedder()
    plan2 = find_duplicates(ds, project / ".cache", threshold=0.999, embedder=emb2)
    assert emb2.calls == 0 and md5_calls == [] and _paths(plan2) == _paths(plan)

    # a changed file is hashed and embedded again, alone
    smooth_image(9, 50, 50).save(ds / "c.png")
    emb3 = ColourEmbedder()
    find_duplicates(ds, project / ".cache", threshold=0.999, embedder=emb3)
    assert emb3.images == 1 and [p.name for p in md5_calls] == ["c.png"]


def test_chain_of_near_copies_is_one_group(tmp_path):
    ds = tmp_path / "p" / "dataset"
    ds.mkdir(parents=True)
    # mean colours 100, 103, 106: neighbours are within the threshold, the ends are not
    for name, v, size in (
        ("x.png", 100, (10, 10)),
        ("y.png", 103, (30, 30)),
        ("z.png", 106, (20, 20)),
        ("far.png", 250, (5, 5)),
    ):
        Image.new("RGB", size, (v, 90, 80)).save(ds / name)

    class Emb:
        key = "chain"

        def __call__(self, images):
            return np.stack(
                [[np.asarray(im, np.float32)[0, 0, 0] / 100, 1.0] for im in images]
            )

    e = Emb()
    sims = lambda a, b: float(
        np.dot(
            *(
                v / np.linalg.norm(v)
                for v in e(
                    [
                        Image.new("RGB", (1, 1), (a, 0, 0)),
                        Image.new("RGB", (1, 1), (b, 0, 0)),
                    ]
                )
            )
        )
    )
    t = (sims(100, 103) + sims(100, 106)) / 2
    assert sims(100, 103) > t and sims(103, 106) > t and sims(100, 106) < t
    plan = find_duplicates(ds, None, threshold=t, embedder=e)
    assert _paths(plan) == [[("y.png", True), ("z.png", False), ("x.png", False)]]


def test_apply_plan_moves_images_and_captions_and_restore_is_byte_identical(project):
    ds = project / "dataset"
    before = {p.name: p.read_bytes() for p in ds.iterdir()}
    plan = find_duplicates(
        ds, project / ".cache", threshold=0.999, embedder=ColourEmbedder()
    )
    plan.set_keep(1, "b_small.jpg", True)  # the UI toggles: keep both b's
    plan.set_keep(1, "b.jpg", True)
    with pytest.raises(StudioError):
        plan.set_keep(0, "nope.png", True)
    batch = apply_plan(project, plan)
    assert sorted(batch.files) == ["dataset/a_copy.png", "dataset/a_copy.txt"]
    assert sorted(p.name for p in ds.iterdir()) == [
        "a.png",
        "b.jpg",
        "b.txt",
        "b_small.jpg",
        "b_small.txt",
        "c.png",
    ]
    trash.restore(project, batch.batch_id)
    assert {p.name: p.read_bytes() for p in ds.iterdir()} == before


def test_apply_plan_keeps_a_caption_shared_with_a_kept_image(project):
    ds = project / "dataset"
    shutil.copy(
        ds / "b.jpg", ds / "b.png"
    )  # b.png and b.jpg share b.txt; an exact copy
    plan = find_duplicates(ds, None, near=False)
    group = next(
        g for g in plan.groups if {m.path for m in g.members} == {"b.jpg", "b.png"}
    )
    assert [m.keep for m in group.members] == [
        True,
        False,
    ]  # same size: "b.jpg" < "b.png"
    batch = apply_plan(project, plan)
    assert "dataset/b.png" in batch.files and "dataset/b.txt" not in batch.files
    assert (ds / "b.txt").read_bytes() == b"big caption"


def test_a_group_with_nothing_kept_is_refused(project):
    plan = find_duplicates(project / "dataset", None, near=False)
    plan.set_keep(0, "a.png", False)
    with pytest.raises(StudioError, match="group 1"):
        apply_plan(project, plan)
    assert (project / "dataset" / "a_copy.png").exists()


# ----------------------------------------------------------------------------------------------
# the open_clip path on a tiny random CLIP


def test_clip_embedder_shapes_normalisation_and_resized_copies(project, clip_dir):
    emb = dd.load_clip_embedder(str(clip_dir))
    assert emb.key.startswith("tiny-clip") and emb.device == "cpu"
    ims = [
        smooth_image(2, 120, 90),
        smooth_image(2, 120, 90).resize((60, 45), Image.BICUBIC),
        smooth_image(3, 90, 120),
        smooth_image(4, 120, 90),
    ]
    e = emb(ims)
    assert e.shape == (4, 32) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    s = e @ e.T
    assert s[0, 1] >= 0.9998 and max(s[0, 2], s[0, 3]) < 0.995
    np.testing.assert_allclose(
        emb(ims[:1]), e[:1], atol=1e-5
    )  # batching does not change a vector

    plan = find_duplicates(
        project / "dataset", project / ".cache", threshold=0.999, embedder=emb
    )
    assert _paths(plan) == [
        [("a.png", True), ("a_copy.png", False)],
        [("b.jpg", True), ("b_small.jpg", False)],
    ]
    cached = np.load(
        project / ".cache" / "dedupe" / f"embeddings-{dd._slug(emb.key)}.npz"
    )
    assert cached["embedding"].shape == (4, 32) and cached["md5"].shape == (4,)


def test_open_clip_errors_are_plain(tmp_path, monkeypatch):
    with pytest.raises(StudioError, match="no model named"):
        dd.load_open_clip("ViT-Nope-1")
    with pytest.raises(StudioError, match="pretrained tag"):
        dd.load_open_clip("ViT-B-32", "no_such_tag", models_dir=tmp_path)
    with pytest.raises(StudioError, match="open_clip_config.json"):
        dd.load_open_clip(f"local-dir:{tmp_path}")

    import open_clip

    def offline(*a, **k):
        raise FileNotFoundError("Failed to download file")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(StudioError) as e:
        dd.load_open_clip("ViT-B-32", "laion2b_s34b_b79k", models_dir=tmp_path)
    assert "huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in e.value.fix
    assert str(tmp_path / "open_clip") in e.value.fix


def test_open_clip_weights_found_in_our_cache_without_download(
    tmp_path, monkeypatch, clip_dir
):
    """A file in <models_dir>/open_clip in the hub cache layout is used as is."""
    import open_clip

    monkeypatch.setattr(
        open_clip,
        "download_pretrained",
        lambda *a, **k: pytest.fail("tried to download"),
    )
    calls = []
    import huggingface_hub

    monkeypatch.setattr(
        huggingface_hub,
        "try_to_load_from_cache",
        lambda repo, name, cache_dir=None: (
            calls.append((repo, name, cache_dir))
            or (str(clip_dir / "open_clip_model.safetensors") if cache_dir else None)
        ),
    )
    # the tiny weights do not fit ViT-B-32: loading fails, but only after the cache lookup succeeded
    with pytest.raises(StudioError, match="could not load ViT-B-32"):
        dd.load_open_clip("ViT-B-32", "laion2b_s34b_b79k", models_dir=tmp_path)
    assert calls[0] == (
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "open_clip_model.safetensors",
        str(tmp_path / "open_clip"),
    )


def test_cli_dedupe(project, clip_dir, capsys):
    root = project.parent
    rc = main(
        [
            "dedupe",
            "--project",
            "proj",
            "--root",
            str(root),
            "--model",
            str(clip_dir),
            "--threshold",
            "0.999",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "b_small.jpg" in out and "a_copy.png" in out
    assert (project / "dataset" / "a_copy.png").exists()
    rc = main(
        ["dedupe", "--project", "proj", "--root", str(root), "--exact-only", "--apply"]
    )
    assert (
        rc == 0
        and not (project / "dataset" / "a_copy.png").exists()
        and (project / "dataset" / "b_small.jpg").exists()
    )
    assert "trash" in capsys.readouterr().out
