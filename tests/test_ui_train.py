"""The Train sub-tab under gradio 3.41.2 and 4.40: the form table, presets, preview, save/load, and a
real training on the tiny demo model started, resumed and watched through the tab's callbacks."""

from __future__ import annotations

import dataclasses
import html
import shutil

import pytest

from lora_trainer.jobs import JobStatus
from lora_trainer.models.demo import write_demo_checkpoint
from lora_trainer.project import create_project
from lora_trainer.train.config import DatasetFolder, TrainConfig, load_train_config
from lora_trainer.ui.app import build_tab
from lora_trainer.ui.context import STANDALONE_HOST_KEY, StudioContext
from lora_trainer.ui.train import last_log_history, session
from lora_trainer.ui.train.form import (
    HIDDEN,
    PSEUDO,
    SECTIONS,
    SETTINGS,
    config_from_values,
    form_values,
    parse_args,
    to_ui,
)
from tests.ui_driver import component, handlers, is_update, trigger

pytestmark = pytest.mark.gradio3

SD15, SDXL = TrainConfig.sd15_defaults(), TrainConfig.sdxl_defaults()
KINDS = {"text", "lines", "args", "number", "slider", "checkbox", "dropdown", "tristate"}
# Small and quick on a CPU: 64 px images in a 64 px bucket, AdamW in float32, one 75-token chunk.
FAST = {"checkpoint": "tiny.safetensors", "resolution": 256, "min_bucket_reso": 256, "bucket_no_upscale": True,
        "optimizer": "AdamW", "optimizer_args": {}, "mixed_precision": "no", "max_token_length": 75,
        "lr_scheduler": "constant", "lr_warmup_ratio": 0.0, "network_dim": 4, "network_alpha": 4.0,
        "train_batch_size": 1, "datasets": [DatasetFolder(repeats=1)], "keep_only_last_n_epochs": 0}


@pytest.fixture
def ctx(tmp_path):
    return StudioContext.for_root(tmp_path / "studio")


@pytest.fixture
def project(ctx):
    from lora_trainer.demo.dataset import make_demo_dataset

    p = create_project(ctx.root, "alice")
    make_demo_dataset(p.dataset_dir, count=4, size=64)
    return p


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return write_demo_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", "sd15", dtype="fp32")


def handler(tab, elem_id: str, event: str, name: str):
    return next(h for h in handlers(tab, elem_id, event) if h[0].__name__ == name)


def call(tab, elem_id: str, event: str, name: str, *values) -> dict:
    """Run the named handler of `elem_id.event`; its outputs keyed by elem_id."""
    fn, inputs, outputs = handler(tab, elem_id, event, name)
    assert len(values) == len(inputs)
    out = fn(*values)
    out = [out] if len(outputs) == 1 else list(out)
    return {c.elem_id: v for c, v in zip(outputs, out)}


def merged(before: list, after: list) -> list:
    """Form values after a callback that returns gr.update() for what did not change."""
    return [b if is_update(a) else a for b, a in zip(before, after)]


def text(value) -> str:
    return html.unescape(str(value))


def values_with(config: TrainConfig, **changes) -> list:
    values = form_values(config)
    for name, value in changes.items():
        values[[s.name for s in SETTINGS].index(name)] = value
    return values


# ----------------------------------------------------------------------------------------------
# The form table


def test_the_form_table_covers_every_trainconfig_field_once():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert (set(names) - set(PSEUDO)) | set(HIDDEN) == fields
    assert not set(names) & set(HIDDEN) and set(PSEUDO) <= set(names)
    for s in SETTINGS:
        assert s.label and len(s.info) > 15 and s.section in SECTIONS and s.kind in KINDS, s
        for preset in (SD15, SDXL):
            value = to_ui(s, preset)
            if s.choices:
                assert value in s.choices, (s.name, value)
            if s.kind == "slider":
                assert s.minimum <= value <= s.maximum, (s.name, value)
    # the guide's fields are in view, what it fixes is folded away
    guide = {"checkpoint", "arch", "resolution", "flip_aug", "shuffle_tags", "keep_tokens", "repeats", "unit",
             "max_train_epochs", "train_batch_size", "save_every_n_epochs", "keep_only_last_n_epochs", "unet_lr",
             "text_encoder_lr", "lr_scheduler", "lr_scheduler_num_cycles", "lr_warmup_ratio", "min_snr_gamma",
             "optimizer", "optimizer_args", "multires_noise_iterations", "network_type", "network_dim",
             "network_alpha", "conv_dim", "conv_alpha"}
    assert not [s.name for s in SETTINGS if s.name in guide and s.expert]
    assert {s.name for s in SETTINGS if s.expert} >= {"seed", "clip_skip", "mixed_precision", "max_grad_norm"}


def test_components_start_at_the_sd15_guide_and_both_presets_round_trip(ctx):
    tab = build_tab(ctx)  # no project yet
    for s in SETTINGS:
        assert component(tab, s.elem_id).value == to_ui(s, SD15), s.name
    for preset in (SD15, SDXL):
        assert config_from_values(preset, form_values(preset)) == preset
        assert config_from_values(TrainConfig(), form_values(preset)) == preset
    assert parse_args("weight_decay=0.1 betas=[0.9,0.99], decouple=true") == {"weight_decay": 0.1, "betas": [0.9, 0.99], "decouple": True}


def test_changing_the_family_fills_in_its_preset_with_suggested_repeats(ctx, project):
    tab = build_tab(ctx)
    before = values_with(SD15, arch="sdxl", checkpoint="mine.safetensors", sample_prompts="lsdemo, red circle")
    after = merged(before, trigger(tab, "lora_studio_train_arch", "input", "alice", *before))
    got = config_from_values(TrainConfig(), after)
    # 4 images: the XL guide's ~100 samples per epoch -> 25 repeats; the user's model and prompts stay
    assert got == SDXL.replace(checkpoint="mine.safetensors", sample_prompts=["lsdemo, red circle"],
                               datasets=[DatasetFolder(repeats=25)])
    before = values_with(got, arch="sd15")
    back = merged(before, trigger(tab, "lora_studio_train_arch", "input", "alice", *before))
    assert config_from_values(TrainConfig(), back) == SD15.replace(
        checkpoint="mine.safetensors", sample_prompts=["lsdemo, red circle"], datasets=[DatasetFolder(repeats=75)])


def test_optimizer_and_network_type_fill_in_the_guide_values(ctx, project):
    tab = build_tab(ctx)
    before = values_with(SD15, optimizer="Prodigy")
    got = config_from_values(TrainConfig(), merged(before, trigger(tab, "lora_studio_train_optimizer", "input", "alice", *before)))
    assert (got.unet_lr, got.text_encoder_lr, got.lr_scheduler, got.network_alpha) == (0.5, 0.5, "constant_with_warmup", 16.0)
    assert got.optimizer_args["d_coef"] == 2 and got.optimizer_args["safeguard_warmup"] is True
    before = values_with(SDXL, network_type="LoCon")
    got = config_from_values(TrainConfig(), merged(before, trigger(tab, "lora_studio_train_network_type", "input", "alice", *before)))
    assert (got.network_dim, got.network_alpha, got.conv_dim, got.conv_alpha) == (16, 8.0, 16, 8.0)


# ----------------------------------------------------------------------------------------------
# Preview and problems


def test_the_step_preview_of_a_known_dataset(ctx, project):
    tab = build_tab(ctx)
    preview, problems = trigger(tab, "lora_studio_train_check", "click", "alice", *form_values(SD15))
    preview = text(preview)
    for line in ("Activation tag: lsdemo (first tag of 4 of 4 captions)",
                 "dataset: 4 images x 10 repeats = 40 steps.",
                 "40 steps / batch size 2 = 20 steps per epoch.",
                 "10 epochs = 200 total steps.",
                 "The learning rate warms up over the first 10 steps.",
                 "Network: LoRA dim 16, alpha 8.",
                 "The guide's repeats for 4 images: 75 (4 x 75 = 300; aim for 200-400 for SD1.5)."):
        assert line in preview, line
    assert "Model file is empty" in text(problems) and 'class="ls-error"' in problems  # standalone needs a model


def test_bad_values_are_sentences_next_to_the_form(ctx, project):
    tab = build_tab(ctx)
    _, problems = trigger(tab, "lora_studio_train_check", "click", "alice", *values_with(SD15, train_batch_size=0))
    assert "Batch size is 0: must be 1 or more. Set it to 1 or more." in text(problems)
    _, problems = trigger(tab, "lora_studio_train_check", "click", "alice", *values_with(SD15, unet_lr=None))
    assert "UNet learning rate is empty." in text(problems)
    _, problems = trigger(tab, "lora_studio_train_check", "click", "alice", *values_with(SD15, optimizer_args="weight_decay"))
    assert "Optimizer arguments: 'weight_decay' is not key=value." in text(problems)
    outside = ctx.root.parent / "elsewhere.safetensors"
    _, problems = trigger(tab, "lora_studio_train_check", "click", "alice", *values_with(SD15, checkpoint=str(outside)))
    assert "outside the folders LoRA Studio may use" in text(problems)
    for p in (problems,):
        assert "Traceback" not in p


# ----------------------------------------------------------------------------------------------
# project.toml


def test_settings_save_to_project_toml_and_load_back(ctx, project):
    pf = project.load_file()  # a regularization folder and another section the form does not show
    pf.set_section("train", SD15.replace(datasets=[DatasetFolder(repeats=3), DatasetFolder("reg", 1, True)]).to_toml_dict())
    pf.set_section("dataset", {"source": "kept"})
    project.save_file(pf)
    tab = build_tab(ctx)
    wanted = SD15.replace(unet_lr=2e-4, network_type="LoCon", conv_dim=12, v_parameterization=True, seed=7,
                          optimizer_args={"weight_decay": 0.1, "betas": [0.9, 0.99]},
                          sample_prompts=["lsdemo, red circle", "lsdemo, blue square"],
                          datasets=[DatasetFolder(repeats=7), DatasetFolder("reg", 1, True)])
    out = call(tab, "lora_studio_train_save", "click", "do_save", "alice", *form_values(wanted))
    assert "Saved the settings to" in out["lora_studio_train_message"]
    saved = project.load_file()
    assert load_train_config(saved.section("train")) == wanted and saved.section("dataset") == {"source": "kept"}
    loaded = call(tab, "lora_studio_project", "change", "do_load", "alice")
    assert [loaded[s.elem_id] for s in SETTINGS] == form_values(wanted)
    assert "Settings from" in loaded["lora_studio_train_message"]


def test_a_new_project_gets_suggested_repeats_and_its_activation_tag(ctx, project):
    loaded = call(build_tab(ctx), "lora_studio_train_load", "click", "do_load", "alice")
    assert loaded["lora_studio_train_repeats"] == 75 and loaded["lora_studio_train_sample_prompts"] == "lsdemo"
    assert "No saved settings yet" in text(loaded["lora_studio_train_message"])


def test_a_broken_train_section_is_a_sentence_and_the_form_stays(ctx, project):
    project.toml_path.write_text('schema_version = 1\n[train]\nunet_lrr = 1e-4\n', "utf-8")
    loaded = call(build_tab(ctx), "lora_studio_train_load", "click", "do_load", "alice")
    assert "unknown setting 'unet_lrr'" in text(loaded["lora_studio_train_message"])
    assert all(is_update(loaded[s.elem_id]) for s in SETTINGS)
    # Saving from the form replaces the broken section; the old file is kept in the trash.
    out = call(build_tab(ctx), "lora_studio_train_save", "click", "do_save", "alice", *form_values(SDXL))
    assert "a copy of the old file is in the project's trash" in text(out["lora_studio_train_message"])
    assert load_train_config(project.load_file().section("train")) == SDXL
    from lora_trainer.trash import list_batches

    assert len(list_batches(project.dir)) == 1


# ----------------------------------------------------------------------------------------------
# Training through the tab on the tiny demo model


def test_start_resume_and_watch_a_real_training(ctx, project, tiny_checkpoint):
    shutil.copy(tiny_checkpoint, project.dir / "tiny.safetensors")  # a bare name is found in the project folder
    tab = build_tab(ctx)
    one_epoch = SD15.replace(**FAST, max_train_epochs=1)
    out = call(tab, "lora_studio_train_start", "click", "do_start", "alice", *form_values(one_epoch))
    job_id = out["lora_studio_train_job"]
    assert out["lora_studio_job_id"] == job_id and "Training alice" in text(out["lora_studio_train_message"])
    job = ctx.jobs.get(job_id)
    assert job.wait(60) and job.status == JobStatus.DONE, job.error
    assert load_train_config(project.load_file().section("train")) == one_epoch  # Start saved the settings as typed
    host = ctx.extra[STANDALONE_HOST_KEY][1]

    view = call(tab, "lora_studio_train_refresh", "click", "do_refresh", "alice", job_id, "")
    assert view["lora_studio_train_job"] == job_id
    assert "Finished 1 of 1 epochs, 4 steps" in text(view["lora_studio_train_summary"])
    assert view["lora_studio_train_chart"].size == (720, 300) and len(job.history) == 4
    assert "alice-01.safetensors" in view["lora_studio_train_epochs"] and view["lora_studio_train_samples"] == []
    again = call(tab, "lora_studio_train_poll", "click", "do_refresh", "alice", job_id, view["lora_studio_train_seen"])
    assert all(is_update(again[k]) for k in ("lora_studio_train_chart", "lora_studio_train_epochs", "lora_studio_train_samples"))
    assert again["lora_studio_train_summary"] == view["lora_studio_train_summary"]

    # Resume the stopped-after-one-epoch run to two epochs, now with a sample per epoch.
    two = one_epoch.replace(max_train_epochs=2, sample_every_n_epochs=1, sample_prompts=["lsdemo"], sample_steps=1)
    out = call(tab, "lora_studio_train_resume", "click", "do_resume", "alice", *form_values(two))
    resumed = ctx.jobs.get(out["lora_studio_train_job"])
    assert resumed.wait(90) and resumed.status == JobStatus.DONE, resumed.error
    assert ctx.extra[STANDALONE_HOST_KEY][1] is host  # the model was loaded once

    # A reloaded page (a new tab on the same server) finds the project's newest run by itself.
    view = call(build_tab(ctx), "lora_studio_train_poll", "click", "do_refresh", "alice", "", "")
    assert view["lora_studio_train_job"] == resumed.id
    assert "Finished 2 of 2 epochs, 8 steps (resumed after epoch 1)" in text(view["lora_studio_train_summary"])
    assert "alice-01.safetensors" in view["lora_studio_train_epochs"] and "alice-02.safetensors" in view["lora_studio_train_epochs"]
    assert [caption for _, caption in view["lora_studio_train_samples"]] == ["alice-02-01"]
    assert (project.output_dir / "samples" / "alice-02-01.png").is_file()

    # Nothing left to resume: a sentence, no job.
    out = call(tab, "lora_studio_train_resume", "click", "do_resume", "alice", *form_values(two))
    assert is_update(out["lora_studio_train_job"])
    assert "The last run of alice already finished all 2 epochs." in text(out["lora_studio_train_message"])


def test_stop_cancels_the_run_and_keeps_the_project_consistent(ctx, project, tiny_checkpoint):
    shutil.copy(tiny_checkpoint, project.dir / "tiny.safetensors")
    tab = build_tab(ctx)
    long = SD15.replace(**FAST, max_train_epochs=50)
    out = call(tab, "lora_studio_train_start", "click", "do_start", "alice", *form_values(long))
    job = ctx.jobs.get(out["lora_studio_train_job"])
    again = call(tab, "lora_studio_train_start", "click", "do_start", "alice", *form_values(long))
    assert "already" in text(again["lora_studio_train_message"]) and is_update(again["lora_studio_train_job"])
    msg = call(tab, "lora_studio_train_stop", "click", "do_stop", job.id, "alice")["lora_studio_train_message"]
    assert "Stopping after the current step" in msg
    assert job.wait(60) and job.status == JobStatus.CANCELLED
    assert "No training of this project is running." in call(tab, "lora_studio_train_stop", "click", "do_stop", job.id, "alice")[
        "lora_studio_train_message"]


def test_start_without_a_model_or_a_stopped_run_says_so(ctx, project, tiny_checkpoint):
    tab = build_tab(ctx)
    out = call(tab, "lora_studio_train_start", "click", "do_start", "alice", *form_values(SD15))
    assert is_update(out["lora_studio_train_job"]) and "Model file is empty" in text(out["lora_studio_train_message"])
    out = call(tab, "lora_studio_train_resume", "click", "do_resume", "alice", *form_values(SD15.replace(checkpoint=str(tiny_checkpoint))))
    assert "outside the folders" in text(out["lora_studio_train_message"])  # the test's checkpoint is not in the studio
    shutil.copy(tiny_checkpoint, project.dir / "tiny.safetensors")
    out = call(tab, "lora_studio_train_resume", "click", "do_resume", "alice", *form_values(SD15.replace(**FAST)))
    assert "There is no stopped run of alice to resume" in text(out["lora_studio_train_message"])
    assert not ctx.jobs.jobs("train")


class LoadedModelHost:
    """What the tab sees of a WebUI host: the loaded model's family and its Lora folder."""

    name = "a1111"

    def __init__(self, arch: str, lora_dir):
        self.arch, self.lora_dir = arch, lora_dir

    def model_arch(self) -> str:
        return self.arch

    def lora_output_dir(self, project):
        return self.lora_dir / project.name

    def wrap_job(self, title, fn, config=None, project=None):
        self.wrapped = (title, config, project)
        return lambda progress, cancel: "ran inside the WebUI's queue lock"  # the real one calls fn there


def test_inside_the_webui_the_loaded_model_is_used(tmp_path, project):
    ctx = StudioContext.for_root(project.root, host=LoadedModelHost("sdxl", tmp_path / "Lora"))
    tab = build_tab(ctx)
    assert component(tab, "lora_studio_train_checkpoint").visible is False
    loaded = call(tab, "lora_studio_train_load", "click", "do_load", "alice")
    assert "the model the WebUI has loaded (SDXL)" in loaded["lora_studio_train_model_note"]
    assert loaded["lora_studio_train_arch"] == "sdxl" and loaded["lora_studio_train_resolution"] == 1024
    assert "No problems found." in loaded["lora_studio_train_problems"]  # no model file needed
    _, problems = trigger(tab, "lora_studio_train_check", "click", "alice", *form_values(SD15))
    assert "The WebUI has an SDXL model loaded, but the settings are for SD1.5." in text(problems)
    config = session.resolve_paths(ctx, project, SDXL)
    assert session.host_for(ctx, config, tmp_path) is ctx.host and STANDALONE_HOST_KEY not in ctx.extra
    assert session.run_files(ctx, project, config).output_dir == tmp_path / "Lora" / "alice"
    out = call(tab, "lora_studio_train_start", "click", "do_start", "alice", *form_values(SDXL))
    job = ctx.jobs.get(out["lora_studio_train_job"])
    assert job.wait(10) and job.result == "ran inside the WebUI's queue lock"
    assert ctx.host.wrapped == ("Training alice", SDXL, project)


def test_the_demo_project_is_ready_to_train(ctx):
    from lora_trainer.cli.demo import ensure_demo_project

    ensure_demo_project(ctx.root)
    tab = build_tab(ctx)
    loaded = call(tab, "lora_studio_train_load", "click", "do_load", "demo")
    assert loaded["lora_studio_train_checkpoint"] == "demo-model.safetensors"  # relative: inside the project
    assert "No problems found." in loaded["lora_studio_train_problems"]
    assert "16 images x 5 repeats = 80 steps." in text(loaded["lora_studio_train_preview"])


def test_the_run_view_after_a_restart_through_gradio_processing(ctx, project):
    """No job in this server process: the chart comes from the newest loss log, the files from disk."""
    from PIL import Image

    from lora_trainer.train.logs import COLUMNS
    from tests.test_ui_dataset import file_of, process

    project.logs_dir.mkdir(parents=True, exist_ok=True)
    rows = [",".join(COLUMNS)] + [f"{i},1,{1 / i:.3f},{1 / i:.3f},0.0005,0.0001,1.5,0.1,{i}" for i in range(1, 6)]
    (project.logs_dir / "alice-20260101-120000.csv").write_text("\n".join(rows) + "\n", "utf-8")
    (project.logs_dir / "alice2-20260102-120000.csv").write_text("step,loss\n1,9\n", "utf-8")  # another project's
    (project.output_dir / "alice-01.safetensors").write_bytes(b"\0" * 4096)
    (project.output_dir / "samples").mkdir()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(project.output_dir / "samples" / "alice-01-01.png")
    tab = build_tab(ctx)
    outs = process(tab, "lora_studio_train_refresh", "click", ["alice", "", ""], name="do_refresh")
    _fn, _inputs, outputs = handler(tab, "lora_studio_train_refresh", "click", "do_refresh")
    got = {c.elem_id: (v.get("value", v) if isinstance(v, dict) and "__type__" in v else v) for c, v in zip(outputs, outs)}
    assert got["lora_studio_train_job"] == "" and got["lora_studio_train_summary"] == ""
    assert file_of(got["lora_studio_train_chart"])  # a served file (gradio 4) or inline PNG data (gradio 3)
    assert "alice-01.safetensors</td><td>4 KB" in got["lora_studio_train_epochs"]
    gallery = got["lora_studio_train_samples"]
    assert len(gallery) == 1 and str(ctx.root) not in str(file_of(gallery[0]))  # served from gradio's cache
    history = last_log_history(project)
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5] and history[1]["loss"] == 0.5


def test_train_script_and_styles_are_injected():
    from lora_trainer.ui.standalone import page_head_assets

    head = page_head_assets()
    assert "lora_studio_train_poll" in head and ".ls-train-epochs" in head


def test_compare_epochs_button_and_the_automatic_grid_after_training(ctx, project, tiny_checkpoint):
    from lora_trainer.ui.compare.runs import set_auto_compare

    shutil.copy(tiny_checkpoint, project.dir / "tiny.safetensors")
    tab = build_tab(ctx)
    out = call(tab, "lora_studio_train_compare", "click", "do_compare", "alice")
    assert "holds no LoRA epoch files" in text(out["lora_studio_train_message"])
    assert not ctx.jobs.jobs("grid")

    set_auto_compare(project, True)
    out = call(tab, "lora_studio_train_start", "click", "do_start", "alice", *form_values(SD15.replace(**FAST, max_train_epochs=1)))
    job = ctx.jobs.get(out["lora_studio_train_job"])
    assert job.wait(60) and job.status == JobStatus.DONE, job.error
    (auto,) = ctx.jobs.jobs("grid")  # queued by the finished training
    assert "queued the comparison grid" in "\n".join(job.log_tail)

    out = call(tab, "lora_studio_train_compare", "click", "do_compare", "alice")
    clicked = ctx.jobs.get(out["lora_studio_job_id"])
    assert clicked.kind == "grid" and "Rendering the grid" in text(out["lora_studio_train_message"])
    for grid in (auto, clicked):  # rendering them is Compare's tests' job; keep this one short
        ctx.jobs.cancel(grid.id)
        assert grid.wait(60)
