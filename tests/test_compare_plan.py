"""Compare plans: finding and choosing epochs, weights, the default prompt, and the S/R planner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_trainer.compare import xyz
from lora_trainer.compare.plan import (
    DEFAULT_WEIGHTS,
    GridPlan,
    GridSettings,
    compare_after_training,
    dataset_prompt_tags,
    make_plan,
    parse_weights,
    prompt_template,
    select_epochs,
)
from lora_trainer.errors import StudioError
from lora_trainer.host.base import GenerationRequest, default_generation
from lora_trainer.network.epochs import find_epoch_files

SD15 = default_generation("sd15")


def touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")
    return folder


# ---- epochs --------------------------------------------------------------------------------------


def test_epoch_files_sorted_numerically_with_the_final_last(tmp_path):
    d = touch(tmp_path, "alice-10.safetensors", "alice-02.safetensors", "alice-01.safetensors", "alice.safetensors",
              "alice-01.json", "notes.txt")
    files = find_epoch_files(d)
    assert [(f.stem, f.epoch) for f in files] == [("alice-01", 1), ("alice-02", 2), ("alice-10", 10), ("alice", None)]
    assert files[-1].label == "alice (final)" and files[0].label == "alice-01"


def test_kohya_six_digit_names_and_an_explicit_stem(tmp_path):
    d = touch(tmp_path, "bob-000001.safetensors", "bob-000003.safetensors", "eve-01.safetensors")
    assert [f.epoch for f in find_epoch_files(d, "bob")] == [1, 3]
    with pytest.raises(StudioError, match="several runs: bob, eve"):
        find_epoch_files(d)


def test_a_stem_that_is_a_prefix_of_another_run_is_not_mixed_in(tmp_path):
    d = touch(tmp_path, "a-01.safetensors", "a-b-01.safetensors")
    assert [f.stem for f in find_epoch_files(d, "a")] == ["a-01"]


def test_only_a_final_file_and_missing_folders(tmp_path):
    d = touch(tmp_path / "x", "solo.safetensors")
    assert [(f.stem, f.epoch) for f in find_epoch_files(d)] == [("solo", None)]
    with pytest.raises(StudioError, match="does not exist"):
        find_epoch_files(tmp_path / "nope")
    with pytest.raises(StudioError, match="no LoRA epoch files"):
        find_epoch_files(touch(tmp_path / "empty"))


@pytest.fixture
def ten(tmp_path):
    return find_epoch_files(touch(tmp_path, *[f"r-{i:02d}.safetensors" for i in range(1, 11)], "r.safetensors"))


@pytest.mark.parametrize(
    "spec, want",
    [
        ("all", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, None]),
        ("every:3", [3, 6, 9, None]),
        ("every:5", [5, 10, None]),
        ("1,3,5", [1, 3, 5]),
        (" 5, 1 ,3", [1, 3, 5]),  # the run's order, whatever the list's
        ("2,final", [2, None]),
        ((10, "last"), [10, None]),
    ],
)
def test_epoch_selection(ten, spec, want):
    assert [f.epoch for f in select_epochs(ten, spec)] == want


@pytest.mark.parametrize("spec, match", [("4,11", "11 not found"), ("every:0", "K must be"), ("1,x", "'x' is not a number")])
def test_bad_epoch_selections_say_what_exists(ten, spec, match):
    with pytest.raises(StudioError, match=match):
        select_epochs(ten, spec)


def test_weights_parse_and_refuse_repeats():
    assert parse_weights("0.5, 0.75,1") == [0.5, 0.75, 1.0]
    with pytest.raises(StudioError, match="listed twice"):
        parse_weights("1, 1.0")
    with pytest.raises(StudioError, match="not a number"):
        parse_weights("0.5,heavy")


# ---- the default prompt --------------------------------------------------------------------------


def write_captions(d: Path, captions: list[str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(captions):
        (d / f"{i}.png").write_bytes(b"")
        (d / f"{i}.txt").write_text(c)
    return d


def test_default_prompt_is_activation_then_common_tags(tmp_path):
    ds = write_captions(tmp_path / "dataset", [
        "alice, 1girl, smile, hat (blue)",
        "alice, 1girl, smile",
        "alice, 1girl, solo",
        "alice, solo, 1girl, rare",
        "alice, 1girl",
    ])
    activation, common = dataset_prompt_tags(ds)
    assert activation == ["alice"]
    assert common == ["1girl", "smile", "solo"]  # "rare" and "hat (blue)" are in < 25% of the images... 1/5 = 20%
    plan = make_plan(touch(tmp_path / "out", "alice-01.safetensors"), GridSettings(), SD15, dataset_dir=ds)
    assert plan.base.prompt == "alice, 1girl, smile, solo, <lora:alice-01:0.5>"
    assert plan.weights == list(DEFAULT_WEIGHTS) and plan.seeds == [1]
    assert (plan.base.width, plan.base.steps, plan.base.cfg_scale, plan.base.sampler_name, plan.base.scheduler) == (512, 20, 7.0, "DPM++ 2M", "Karras")


def test_default_prompt_escapes_brackets_and_honours_keep_tokens(tmp_path):
    ds = write_captions(tmp_path / "dataset", ["zz, style, hat (blue)", "zz, style, hat (blue)"])
    assert dataset_prompt_tags(ds, keep_tokens=2) == (["zz", "style"], ["hat (blue)"])
    plan = make_plan(touch(tmp_path / "out", "zz-01.safetensors"), GridSettings(weights=(1,)), SD15, dataset_dir=ds, keep_tokens=2)
    assert plan.base.prompt == r"zz, style, hat \(blue\), <lora:zz-01:1>"


def test_prompt_template_replaces_the_runs_tag_or_appends_it():
    stems = ["a-01", "a-02", "a"]
    assert prompt_template("cat, <lora:a-02:0.3>, dog", stems, "<lora:a-01:0.5>") == "cat, <lora:a-01:0.5>, dog"
    assert prompt_template("cat, ", stems, "<lora:a-01:0.5>") == "cat, <lora:a-01:0.5>"
    assert prompt_template("", stems, "<lora:a-01:0.5>") == "<lora:a-01:0.5>"
    assert prompt_template("<lora:style:1> cat", stems, "<lora:a-01:0.5>") == "<lora:style:1> cat, <lora:a-01:0.5>"
    with pytest.raises(StudioError, match="2 tags of this run"):
        prompt_template("<lora:a-01:1> <lora:a:1>", stems, "<lora:a-01:0.5>")


# ---- the S/R planner -----------------------------------------------------------------------------


def intended(plan: GridPlan, stem: str, weight: str) -> str:
    return plan.base.prompt.replace(plan.first_tag, f"<lora:{stem}:{weight}>")


def check_cells(plan: GridPlan) -> None:
    """Every cell's prompt, made by the WebUI's S/R rules from the exported axes, is the intended one."""
    (xt, xv), (yt, yv) = plan.xyz_axes()[:2]
    assert xt == yt == xyz.SR_TYPE
    for cell in plan.cells():
        if cell.weight is None:
            assert cell.request.prompt == plan.base.prompt.replace(plan.first_tag, "")
            continue
        w = f"{cell.weight:g}"
        assert cell.request.prompt == intended(plan, cell.epoch.stem, w)
        # the same prompt from the exported X/Y/Z text, parsed back and applied as the WebUI does
        x_values, y_values = (xyz.parse_axis_values(xyz.format_axis_values(v)) for v in (xv, yv))
        wi, ei = plan.weights.index(cell.weight), plan.epochs.index(cell.epoch)
        xi, yi = (ei, wi) if plan.swap_axes else (wi, ei)
        axes = [(x_values, x_values[xi]), (y_values, y_values[yi])]
        assert xyz.apply_axes(plan.base.prompt, plan.base.negative_prompt, axes) == (cell.request.prompt, plan.base.negative_prompt)


@pytest.fixture
def run3(tmp_path):
    return touch(tmp_path / "out", "demo-01.safetensors", "demo-02.safetensors", "demo-03.safetensors", "demo.safetensors")


def test_default_search_strings_are_the_full_stem_and_the_delimited_weight(run3):
    plan = make_plan(run3, GridSettings(prompt="lsdemo, red circle", weights=(0.7, 0.5, 1)), SD15)
    assert plan.base.prompt == "lsdemo, red circle, <lora:demo-01:0.7>"  # first epoch, first weight: S/R finds them
    assert plan.epoch_values == ["demo-01", "demo-02", "demo-03", "demo"]
    assert plan.weight_values == [":0.7>", ":0.5>", ":1>"]
    assert plan.xyz_axes() == [("Prompt S/R", [":0.7>", ":0.5>", ":1>"]), ("Prompt S/R", ["demo-01", "demo-02", "demo-03", "demo"])]
    assert plan.shape == (4, 3)
    check_cells(plan)


def test_another_lora_ending_in_01_does_not_catch_the_epoch_axis(run3):
    # "-01" alone would also rename style-01; the full stem "demo-01" can not.
    plan = make_plan(run3, GridSettings(prompt="<lora:style-01:0.3>, cat", weights=(0.5, 1)), SD15)
    assert plan.epoch_values[0] == "demo-01"
    check_cells(plan)
    assert all("<lora:style-01:0.3>" in c.request.prompt for c in plan.cells())


def test_the_final_files_stem_inside_other_text_is_harmless_as_it_is_never_searched_first(run3):
    # "demo" (the final file) is inside "lsdemo", but the final file sorts last, so "demo" is a
    # replacement value, never the search string; alone on its axis, its S/R changes nothing.
    plan = make_plan(run3, GridSettings(epochs="2,final", prompt="lsdemo", weights=(0.5, 1)), SD15)
    assert plan.epoch_values == ["demo-02", "demo"]
    check_cells(plan)
    plan = make_plan(run3, GridSettings(epochs="final", prompt="lsdemo", weights=(0.5, 1)), SD15)
    assert plan.epoch_values == ["demo"] and plan.cells()[0].request.prompt == "lsdemo, <lora:demo:0.5>"
    check_cells(plan)


def test_a_repeated_name_falls_back_to_the_tag_form(run3):
    # "demo-03" is also in the prompt's text: replacing it would change "demo-03 poster" too
    plan = make_plan(run3, GridSettings(epochs="3,final", prompt="lsdemo, demo-03 poster", weights=(0.5, 1)), SD15)
    assert plan.epoch_values == ["<lora:demo-03:", "<lora:demo:"]
    check_cells(plan)


def test_a_repeated_weight_falls_back_to_the_stem_form(run3):
    plan = make_plan(run3, GridSettings(prompt="<lora:style:0.5>, cat", weights=(0.5, 1)), SD15)
    assert plan.weight_values == ["demo-01:0.5>", "demo-01:1>"]  # X (weights) runs before Y renames the epoch
    check_cells(plan)
    assert all("<lora:style:0.5>" in c.request.prompt for c in plan.cells())


def test_no_search_strings_fit_when_the_weight_repeats_and_axes_are_swapped(run3):
    with pytest.raises(StudioError, match="No Prompt S/R search strings"):
        make_plan(run3, GridSettings(prompt="<lora:style:0.5>, cat", weights=(0.5, 1), swap_axes=True), SD15)


def test_a_negative_prompt_naming_the_epoch_forces_the_tag_form(run3):
    plan = make_plan(run3, GridSettings(prompt="cat", negative_prompt="demo-01 artifacts", weights=(1,)), SD15)
    assert plan.epoch_values[0] == "<lora:demo-01:"
    assert {c.request.negative_prompt for c in plan.cells()} == {"demo-01 artifacts"}


def test_no_lora_column_swap_and_several_seeds(run3):
    s = GridSettings(epochs="1,2", prompt="cat", weights=(0.5, 1), seeds=(7, 9), no_lora_column=True)
    plan = make_plan(run3, s, SD15)
    assert plan.shape == (4, 3)
    assert plan.col_labels() == ["no LoRA", "0.5", "1"]
    assert plan.row_labels() == ["demo-01\nseed 7", "demo-01\nseed 9", "demo-02\nseed 7", "demo-02\nseed 9"]
    cells = plan.cells()
    assert [(c.row, c.col) for c in cells] == [(r, c) for r in range(4) for c in range(3)]
    assert [c.seed for c in cells if c.row == 1] == [9, 9, 9]  # one seed across a row
    assert cells[0].request.prompt == "cat, " and cells[0].weight is None
    axes = plan.xyz_axes()
    assert axes[0] == ("Prompt S/R", [":0.5>", ":1>", ":0>"])  # no LoRA exported as weight 0, last
    assert axes[2] == ("Seed", ["7", "9"])
    check_cells(plan)

    swapped = make_plan(run3, GridSettings(epochs="1,2", prompt="cat", weights=(0.5, 1), no_lora_column=True, swap_axes=True), SD15)
    assert swapped.shape == (3, 2) and swapped.row_labels() == ["no LoRA", "0.5", "1"]
    assert swapped.xyz_axes()[0] == ("Prompt S/R", ["demo-01", "demo-02"])
    check_cells(swapped)


def test_xyz_script_text_and_json_round_trip(run3):
    plan = make_plan(run3, GridSettings(epochs="every:2", prompt="cat", negative_prompt="dog", weights=(0.6, 0.8), steps=4, width=64, height=96), SD15)
    text = plan.xyz_script_text()
    assert "X type: Prompt S/R\nX values: :0.6>, :0.8>\nY type: Prompt S/R\nY values: demo-02, demo\n" in text
    assert "Prompt: cat, <lora:demo-02:0.6>\nNegative prompt: dog\n" in text
    assert "Steps: 4" in text and "Size: 64x96" in text
    data = json.loads(plan.dumps())
    back = GridPlan.from_json(data)
    assert back.to_json() == data
    assert [c.request for c in back.cells()] == [c.request for c in plan.cells()]


def test_compare_after_training_uses_the_saved_epochs_and_keep_tokens(tmp_path):
    project = tmp_path / "alice"
    write_captions(project / "dataset", ["alice, blue eyes, smile", "alice, blue eyes"])
    (project / "project.toml").write_text("schema_version = 1\n[train]\nkeep_tokens = 2\n")
    out = touch(project / "output", "alice-01.safetensors", "alice-02.safetensors", "alice-03.safetensors")
    plan = compare_after_training(project, out, "alice", SD15, epochs=[1, 3])
    assert [e.epoch for e in plan.epochs] == [1, 3]
    assert plan.base.prompt == "alice, blue eyes, smile, <lora:alice-01:0.5>"
    assert isinstance(plan.base, GenerationRequest) and plan.base.width == 512
