"""The WD tagger end to end on a tiny ONNX model with the real input/output contract."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lora_trainer import trash
from lora_trainer.cli import main
from lora_trainer.dataset import tagger as tg
from lora_trainer.dataset.tagger import (
    Labels,
    TagSettings,
    format_tag,
    load_labels,
    mcut_threshold,
    preprocess,
    select_tags,
    tag_dataset,
)
from lora_trainer.errors import StudioError
from tests.tiny_models import (
    TINY_LABELS,
    tiny_tagger_probs,
    write_labels_csv,
    write_tiny_tagger,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_tagger(tmp_path_factory.mktemp("tagger"), size=32)


@pytest.fixture
def project(tmp_path):
    d = tmp_path / "proj"
    (d / "dataset").mkdir(parents=True)
    return d


def _img(path, color, size=(40, 40), mode="RGB"):
    Image.new(mode, size, color).save(path)
    return path


def _labels() -> Labels:
    return Labels(
        tuple(n for n, _ in TINY_LABELS), np.array([c for _, c in TINY_LABELS])
    )


# ----------------------------------------------------------------------------------------------
# preprocessing


def test_preprocess_pads_wide_image_with_white_and_reverses_channels():
    # 4x2 image: row 0 = (10,20,30) x4, row 1 = (40,50,60) x4; square side 4, offset (0, 1)
    im = Image.new("RGB", (4, 2))
    im.putdata([(10, 20, 30)] * 4 + [(40, 50, 60)] * 4)
    x = preprocess(im, 4)
    assert x.shape == (4, 4, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], np.full((4, 3), 255.0))
    np.testing.assert_array_equal(x[1], np.tile([30.0, 20.0, 10.0], (4, 1)))  # BGR
    np.testing.assert_array_equal(x[2], np.tile([60.0, 50.0, 40.0], (4, 1)))
    np.testing.assert_array_equal(x[3], np.full((4, 3), 255.0))


def test_preprocess_tall_image_centres_horizontally():
    im = Image.new("RGB", (1, 3), (0, 0, 0))
    x = preprocess(im, 3)
    assert (
        x[:, 0].tolist() == [[255.0] * 3] * 3 and x[:, 2].tolist() == [[255.0] * 3] * 3
    )
    assert x[:, 1].tolist() == [[0.0] * 3] * 3


def test_preprocess_transparency_becomes_white_and_resize_is_bicubic():
    im = Image.new("RGBA", (2, 2), (0, 0, 255, 0))  # fully transparent blue
    assert np.all(preprocess(im, 2) == 255.0)
    half = Image.new(
        "RGBA", (2, 2), (0, 0, 0, 128)
    )  # half-transparent black over white
    assert np.allclose(preprocess(half, 2), 127.0, atol=1)
    big = Image.new("RGB", (64, 64), (200, 100, 50))
    np.testing.assert_array_equal(
        preprocess(big, 8), np.tile([50.0, 100.0, 200.0], (8, 8, 1))
    )
    # against PIL's own bicubic on a pattern
    rng = np.random.default_rng(0)
    pat = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    ref = np.asarray(pat.resize((5, 5), Image.BICUBIC), np.float32)[:, :, ::-1]
    np.testing.assert_array_equal(preprocess(pat, 5), ref)


# ----------------------------------------------------------------------------------------------
# labels and selection


def test_load_labels_and_bad_header(tmp_path):
    write_labels_csv(tmp_path / "ok.csv")
    labels = load_labels(tmp_path / "ok.csv")
    assert labels.names[:5] == (
        "general",
        "sensitive",
        "questionable",
        "explicit",
        "red_theme",
    )
    assert labels.categories.tolist() == [c for _, c in TINY_LABELS]
    (tmp_path / "bad.csv").write_text("id,tag\n1,a\n")
    with pytest.raises(StudioError, match="bad.csv"):
        load_labels(tmp_path / "bad.csv")


def test_format_tag_kaomoji_and_escaping():
    assert format_tag("long_hair") == "long hair"
    assert (
        format_tag("^_^") == "^_^"
        and format_tag("||_||") == "||_||"
        and format_tag("o_o") == "o_o"
    )
    assert format_tag("kirisame_marisa_(touhou)") == "kirisame marisa (touhou)"
    assert (
        format_tag("kirisame_marisa_(touhou)", escape=True)
        == r"kirisame marisa \(touhou\)"
    )
    assert len(tg.KAOMOJI) == 19


def test_mcut_threshold():
    assert mcut_threshold(np.array([0.2, 0.9, 0.3, 0.8])) == pytest.approx(0.55)
    assert mcut_threshold(np.array([0.99, 0.1, 0.05])) == pytest.approx(0.545)
    assert mcut_threshold(np.array([0.4])) == 0.0


def test_select_tags_thresholds_characters_blacklist_escape():
    labels = _labels()
    #              ratings....            red   green blue  ^_^   long  miku  marisa
    p = np.array(
        [0.9, 0.1, 0.0, 0.0, 0.36, 0.35, 0.9, 0.5, 0.2, 0.86, 0.84], np.float32
    )
    assert select_tags(p, labels, TagSettings()) == [
        "hatsune miku",
        "blue theme",
        "^_^",
        "red theme",
    ]  # 0.35 is not > 0.35
    assert select_tags(p, labels, TagSettings(character_threshold=0.8)) == [
        "hatsune miku",
        "kirisame marisa (touhou)",
        "blue theme",
        "^_^",
        "red theme",
    ]
    assert select_tags(p, labels, TagSettings(characters=False, threshold=0.1)) == [
        "blue theme",
        "^_^",
        "red theme",
        "green theme",
        "long hair",
    ]
    # blacklist in either spelling; ratings never appear
    assert select_tags(
        p, labels, TagSettings(blacklist=("blue_theme", "red theme", "hatsune miku"))
    ) == ["^_^"]
    esc = select_tags(p, labels, TagSettings(character_threshold=0.8, escape=True))
    assert esc[1] == r"kirisame marisa \(touhou\)"
    assert tg.rating_of(p, labels) == "general"


def test_select_tags_mcut():
    labels = _labels()
    p = np.array([0.9, 0.1, 0.0, 0.0, 0.95, 0.9, 0.2, 0.1, 0.05, 0.3, 0.1], np.float32)
    # general: gap 0.9 -> 0.2 is the largest, threshold 0.55; characters: mcut 0.2 clamped? (0.3+0.1)/2=0.2 > 0.15
    assert select_tags(p, labels, TagSettings(mcut=True)) == [
        "hatsune miku",
        "red theme",
        "green theme",
    ]
    p2 = p.copy()
    p2[9:] = [0.12, 0.02]  # mcut 0.07 is raised to the 0.15 floor: no character
    assert select_tags(p2, labels, TagSettings(mcut=True)) == [
        "red theme",
        "green theme",
    ]


# ----------------------------------------------------------------------------------------------
# the model and the dataset


def test_tagger_session_contract(model_dir, tmp_path):
    t = tg.WDTagger(model_dir)
    assert (
        t.size == 32 and t.fixed_batch is None and t.provider == "CPUExecutionProvider"
    )
    assert "CPU" in t.describe()
    x = np.random.default_rng(1).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(
        t.predict(x), tiny_tagger_probs(x.mean(axis=(1, 2))), atol=1e-5
    )
    fixed = tg.WDTagger(write_tiny_tagger(tmp_path / "fixed", size=32, fixed_batch=1))
    assert fixed.fixed_batch == 1
    np.testing.assert_allclose(fixed.predict(x), t.predict(x), atol=1e-5)


def test_mismatched_labels_are_refused(model_dir, tmp_path):
    bad = write_tiny_tagger(tmp_path / "bad")
    write_labels_csv(bad / "selected_tags.csv", TINY_LABELS[:-1])
    with pytest.raises(StudioError, match="10 tags"):
        tg.WDTagger(bad)
    with pytest.raises(StudioError, match="no selected_tags.csv"):
        (bad / "selected_tags.csv").unlink()
        tg.resolve_tagger(bad)


def test_providers():
    assert tg.pick_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert (
        tg.pick_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])[0]
        == "CUDAExecutionProvider"
    )


def test_tag_dataset_end_to_end(model_dir, project):
    ds = project / "dataset"
    _img(ds / "red.png", RED)
    _img(ds / "blue.jpg", BLUE)
    _img(
        ds / "wide_red.png", RED, size=(40, 20)
    )  # padded with white: mean R 255, G and B 127.5
    (ds / "sub").mkdir()
    _img(ds / "sub" / "green.webp", GREEN)
    (ds / "broken.png").write_bytes(b"not an image")
    events = []
    r = tag_dataset(
        ds, project, [model_dir], TagSettings(batch_size=2), progress=events.append
    )
    assert (ds / "red.txt").read_text() == "red theme, ^_^, long hair"
    assert (ds / "blue.txt").read_text() == "hatsune miku, blue theme"
    assert (
        ds / "sub" / "green.txt"
    ).read_text() == "kirisame marisa (touhou), green theme"
    # white padding: G and B means are 127.5, so their theme tags sit at exactly sigmoid(0) = 0.5
    expected = tiny_tagger_probs(np.array([[127.5, 127.5, 255.0]]))[0]
    assert expected[5] == pytest.approx(0.5, abs=1e-3)
    assert (ds / "wide_red.txt").read_text() == ", ".join(
        select_tags(expected, _labels(), TagSettings())
    )
    assert (
        ds / "wide_red.txt"
    ).read_text() == "red theme, ^_^, long hair, green theme, blue theme"
    assert r.failed == ("broken.png",) and not (ds / "broken.txt").exists()
    assert r.write.written == 4
    assert r.top_tags["red theme"] == 2 and r.top_tags["hatsune miku"] == 1
    assert any("on CPU" in e.log for e in events) and any(
        "broken.png" in e.log for e in events
    )
    assert events[-1].fraction == 1.0
    trash.restore(
        project, r.write.trash_batch
    )  # undo: the caption files it created go away again
    assert sorted(p.name for p in ds.rglob("*.txt")) == []


def test_batching_matches_one_at_a_time(model_dir, tmp_path):
    results = []
    for batch in (1, 3):
        proj = tmp_path / f"b{batch}"
        (proj / "dataset").mkdir(parents=True)
        rng = np.random.default_rng(7)
        for i in range(7):
            Image.fromarray(rng.integers(0, 256, (24 + i, 30, 3), dtype=np.uint8)).save(
                proj / "dataset" / f"{i}.png"
            )
        r = tag_dataset(
            proj / "dataset",
            proj,
            [model_dir],
            TagSettings(batch_size=batch, threshold=0.2, workers=2),
        )
        results.append(r.tags)
    assert results[0] == results[1] and len(results[0]) == 7


def test_modes_and_undo(model_dir, project):
    ds = project / "dataset"
    _img(ds / "a.png", RED)
    _img(ds / "b.png", BLUE)
    (ds / "a.txt").write_bytes(b"solo, red theme")
    (ds / "b.txt").write_bytes(b"my own caption")
    r = tag_dataset(ds, project, [model_dir], mode="skip")
    assert r.tags == {} and (ds / "a.txt").read_bytes() == b"solo, red theme"

    r = tag_dataset(ds, project, [model_dir], mode="append")
    assert (ds / "a.txt").read_text() == "solo, red theme, ^_^, long hair"
    assert (ds / "b.txt").read_text() == "my own caption, hatsune miku, blue theme"
    batch = r.write.trash_batch
    assert sorted(trash.list_batches(project)[0].files) == [
        "dataset/a.txt",
        "dataset/b.txt",
    ]

    r2 = tag_dataset(
        ds, project, [model_dir], mode="append"
    )  # nothing new: no rewrite, no trash batch
    assert (
        r2.write.written == 0
        and r2.write.unchanged == 2
        and r2.write.trash_batch is None
    )

    trash.restore(project, batch)
    assert (ds / "a.txt").read_bytes() == b"solo, red theme" and (
        ds / "b.txt"
    ).read_bytes() == b"my own caption"

    r = tag_dataset(ds, project, [model_dir], mode="overwrite")
    assert (
        ds / "a.txt"
    ).read_text() == "red theme, ^_^, long hair" and r.write.written == 2


def test_two_models_give_the_union(model_dir, project, tmp_path):
    second = write_tiny_tagger(tmp_path / "second", size=48)
    labels = list(TINY_LABELS)
    labels[8] = ("smile", 0)  # the second model calls long_hair's output "smile"
    write_labels_csv(second / "selected_tags.csv", labels)
    _img(project / "dataset" / "a.png", RED)
    r = tag_dataset(project / "dataset", project, [model_dir, second])
    assert r.tags == {"a.png": ["red theme", "^_^", "long hair", "smile"]}


def test_resolve_tagger_names(tmp_path, monkeypatch):
    with pytest.raises(StudioError, match="known tagger name"):
        tg.resolve_tagger("no-such-tagger", tmp_path)
    write_tiny_tagger(tmp_path / "taggers" / "wd-vit-tagger-v3")
    assert (
        tg.resolve_tagger("wd-vit-tagger-v3", tmp_path)
        == tmp_path / "taggers" / "wd-vit-tagger-v3"
    )

    import huggingface_hub

    def offline(*a, **k):
        raise OSError("no connection")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(StudioError) as e:
        tg.resolve_tagger("wd-eva02-large-tagger-v3", tmp_path)
    assert "huggingface.co/SmilingWolf/wd-eva02-large-tagger-v3" in e.value.fix
    assert str(tmp_path / "taggers" / "wd-eva02-large-tagger-v3") in e.value.fix


def test_cli_tag(model_dir, tmp_path, capsys):
    proj = tmp_path / "root" / "demo"
    (proj / "dataset").mkdir(parents=True)
    _img(proj / "dataset" / "a.png", BLUE)
    rc = main(
        [
            "tag",
            "--project",
            "demo",
            "--root",
            str(tmp_path / "root"),
            "--model-dir",
            str(model_dir),
            "--no-characters",
            "--blacklist",
            "x,y",
        ]
    )
    assert rc == 0
    assert (proj / "dataset" / "a.txt").read_text() == "blue theme"
    assert "blue theme (1)" in capsys.readouterr().out
