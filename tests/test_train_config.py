"""TrainConfig: the guide's presets exactly, project.toml round trips, unknown keys, validation."""

from __future__ import annotations

import dataclasses

import pytest

from lora_trainer import toml_io
from lora_trainer.errors import StudioError
from lora_trainer.project import ProjectFile, load_project_file, save_project_file
from lora_trainer.train import presets
from lora_trainer.train.config import (
    DatasetFolder,
    Problem,
    TrainConfig,
    load_train_config,
    raise_if_errors,
    validate,
)
from lora_trainer.train.data import DatasetSummary, FolderSummary


def test_sd15_preset_is_the_guide():
    c = TrainConfig.sd15_defaults()
    assert isinstance(c, TrainConfig) and c == TrainConfig()
    assert (c.arch, c.resolution, c.datasets, c.train_batch_size) == ("sd15", 512, [DatasetFolder("dataset", 10)], 2)
    assert (c.unit, c.max_train_epochs, c.save_every_n_epochs, c.keep_only_last_n_epochs) == ("epochs", 10, 1, 10)
    assert (c.unet_lr, c.text_encoder_lr) == (5e-4, 1e-4)
    assert (c.lr_scheduler, c.lr_scheduler_num_cycles, c.lr_warmup_ratio) == ("cosine_with_restarts", 3, 0.05)
    assert c.min_snr_gamma == 5.0
    assert (c.network_type, c.network_dim, c.network_alpha, c.conv_dim, c.conv_alpha) == ("LoRA", 16, 8.0, 8, 4.0)
    assert (c.clip_skip, c.shuffle_tags, c.keep_tokens, c.flip_aug) == (2, True, 1, False)
    assert (c.seed, c.max_token_length, c.mixed_precision, c.save_precision) == (42, 225, "fp16", "fp16")
    assert (c.cache_latents, c.cache_latents_to_disk, c.gradient_checkpointing) == (True, False, False)
    assert (c.min_bucket_reso, c.max_bucket_reso, c.bucket_reso_steps, c.optimizer) == (256, 1024, 64, "AdamW8bit")
    assert (c.noise_offset, c.multires_noise_iterations, c.ip_noise_gamma) == (0.0, 0, 0.0)


def test_sdxl_preset_is_the_guide():
    c = TrainConfig.sdxl_defaults()
    assert (c.arch, c.resolution, c.datasets[0].repeats, c.train_batch_size) == ("sdxl", 1024, 2, 4)
    assert (c.unet_lr, c.text_encoder_lr, c.min_snr_gamma) == (3e-4, 6e-5, 8.0)
    assert (c.multires_noise_iterations, c.multires_noise_discount) == (6, 0.3)
    assert (c.network_dim, c.network_alpha, c.conv_dim, c.conv_alpha) == (8, 4.0, 16, 8.0)
    assert (c.gradient_checkpointing, c.cache_latents, c.cache_latents_to_disk, c.cache_text_encoder_outputs) == (True, True, True, False)
    assert (c.mixed_precision, c.full_fp16, c.no_half_vae, c.max_bucket_reso) == ("fp16", True, True, 4096)
    assert c.optimizer_args == {"weight_decay": 0.1, "betas": [0.9, 0.99]}
    assert (c.lr_scheduler, c.lr_scheduler_num_cycles, c.flip_aug, c.keep_tokens) == ("cosine_with_restarts", 3, False, 1)
    assert validate(c) == [] and validate(TrainConfig()) == []
    # presets do not share mutable state
    c.optimizer_args["x"] = 1
    c.datasets.append(DatasetFolder("more"))
    assert "x" not in TrainConfig.sdxl_defaults().optimizer_args and len(TrainConfig.sdxl_defaults().datasets) == 1


def test_every_field_has_a_default_and_a_comment():
    import inspect

    source = inspect.getsource(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        line = next(line for line in source.splitlines() if line.strip().startswith(f"{f.name}:"))
        assert "#" in line, f"{f.name} has no comment naming its guide setting"
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def test_project_toml_round_trip(tmp_path):
    c = TrainConfig.sdxl_defaults().replace(
        project_name="mychar",
        datasets=[DatasetFolder("dataset", 2), DatasetFolder("/abs/reg", 1, True, "woman")],
        v_parameterization=True,
        sample_prompts=["sks, smile", 'quote " and \\ backslash'],
        network_type="LoCon",
        unet_lr=1e-4,
    )
    pf = ProjectFile()
    pf.set_section("train", c.to_toml_dict())
    pf.set_section("dataset", {"other": "kept"})
    save_project_file(tmp_path / "project.toml", pf)
    back = load_project_file(tmp_path / "project.toml")
    assert TrainConfig.from_toml_dict(back.section("train")) == c
    assert back.section("dataset") == {"other": "kept"}
    assert "[[train.datasets]]" in (tmp_path / "project.toml").read_text("utf-8")
    for preset in (TrainConfig.sd15_defaults(), TrainConfig.sdxl_defaults()):
        assert TrainConfig.from_toml_dict(toml_io.loads(toml_io.dumps(preset.to_toml_dict()))) == preset


def test_partial_section_takes_its_family_defaults():
    assert load_train_config({}) == TrainConfig()
    assert load_train_config({"arch": "sdxl", "unet_lr": 1}) == TrainConfig.sdxl_defaults().replace(unet_lr=1.0)
    assert load_train_config(None, arch="sdxl") == TrainConfig.sdxl_defaults()


@pytest.mark.parametrize(
    "section,words",
    [
        ({"unet_lrr": 1e-4}, ["'unet_lrr'", "'unet_lr'"]),
        ({"shuffle_caption": True}, ["'shuffle_caption'", "'shuffle_tags'"]),
        ({"datasets": [{"path": "x", "repeat": 3}]}, ["'repeat'", "'repeats'"]),
        ({"train_batch_size": "2"}, ["train_batch_size", "int"]),
        ({"flip_aug": 1}, ["flip_aug", "bool"]),
        ({"arch": "sd3"}, ["sd3", "sdxl"]),
        ({"datasets": {"path": "x"}}, ["datasets"]),
    ],
)
def test_bad_keys_and_types_are_named(section, words):
    with pytest.raises(StudioError) as e:
        TrainConfig.from_toml_dict(section)
    text = str(e.value)
    for w in words:
        assert w in text


def fields_of(problems: list[Problem], severity: str | None = None) -> set[str]:
    return {p.field for p in problems if severity is None or p.severity == severity}


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"network_dim": 0}, "network_dim"),
        ({"train_batch_size": 0}, "train_batch_size"),
        ({"unet_lr": 0.0}, "unet_lr"),
        ({"text_encoder_lr": -1e-4}, "text_encoder_lr"),
        ({"resolution": 500}, "resolution"),
        ({"resolution": 32}, "resolution"),
        ({"arch": "sdxl", "cache_text_encoder_outputs": True}, "cache_text_encoder_outputs"),
        ({"cache_text_encoder_outputs": True, "text_encoder_lr": 0.0}, "cache_text_encoder_outputs"),  # sd15
        ({"full_fp16": True, "mixed_precision": "bf16"}, "full_fp16"),
        ({"optimizer": "adamw8bit"}, "optimizer"),
        ({"lr_scheduler": "cosine_restarts"}, "lr_scheduler"),
        ({"bucket_reso_steps": 32}, "bucket_reso_steps"),
        ({"network_type": "LoHa"}, "network_type"),
        ({"unit": "steps", "max_train_steps": 0}, "max_train_steps"),
        ({"max_token_length": 100}, "max_token_length"),
        ({"project_name": "a/b"}, "project_name"),
        ({"checkpoint": "/no/such/model.safetensors"}, "checkpoint"),
        ({"datasets": []}, "datasets"),
        ({"datasets": [DatasetFolder("d", 0)]}, "datasets[0].repeats"),
        ({"caption_dropout_rate": 1.5}, "caption_dropout_rate"),
    ],
)
def test_validation_errors(changes, field):
    problems = validate(TrainConfig().replace(**changes))
    assert field in fields_of(problems, "error"), problems
    p = next(p for p in problems if p.field == field)
    assert p.message and str(p).startswith("Error:")
    with pytest.raises(StudioError):
        raise_if_errors(problems)


def test_validation_accepts_what_the_guide_allows():
    assert validate(TrainConfig().replace(text_encoder_lr=0.0)) == []  # styles: UNet only
    assert validate(TrainConfig.sdxl_defaults().replace(bucket_reso_steps=32)) == []
    sdxl_cached = TrainConfig.sdxl_defaults().replace(cache_text_encoder_outputs=True, text_encoder_lr=0.0)
    assert fields_of(validate(sdxl_cached), "error") == set()
    assert "cache_text_encoder_outputs" in fields_of(validate(sdxl_cached), "warning")  # shuffle is off
    msg = next(p for p in validate(TrainConfig().replace(optimizer="adamw8bit")) if p.field == "optimizer")
    assert "AdamW8bit" in msg.fix
    warn = validate(TrainConfig().replace(optimizer="Prodigy"))
    assert fields_of(warn, "warning") == {"unet_lr"} and fields_of(warn, "error") == set()


def test_a_64_px_model_trains_at_its_own_size_and_a_real_one_is_warned(tmp_path):
    """64 px is the demo models' size (their header says so); a real model below 256 px is
    warned about."""
    from lora_trainer.cli.demo import ensure_demo_project

    for arch in ("sd15", "sdxl"):
        project = ensure_demo_project(tmp_path, arch)
        config = TrainConfig.from_toml_dict(project.load_file().section("train")).replace(checkpoint=str(project.checkpoint()))
        assert config.arch == arch and validate(config) == []
        [warning] = validate(config.replace(checkpoint=""))  # the WebUI's model: a real one
        assert (warning.field, warning.severity) == ("resolution", "warning") and "512 (SD1.5) or 1024 (SDXL)" in warning.fix


def summary(images=20, captions=20, repeats=10, buckets=None, **kw) -> DatasetSummary:
    return DatasetSummary(
        folders=[FolderSummary("dataset", True, images, captions, repeats)],
        bucket_counts=buckets if buckets is not None else ({(512, 512): images * repeats} if images else {}),
        images_with_captions=captions, max_tags=5 if captions else 0, **kw)


def test_validation_with_the_dataset():
    c = TrainConfig()
    assert validate(c, summary()) == []
    none = validate(c, summary(images=0, captions=0))
    assert {"datasets[0].path", "datasets"} <= fields_of(none, "error")
    long = validate(c.replace(max_train_epochs=60), summary())  # 20 x 10 / 2 x 60 = 6000: fine
    assert long == []
    too_long = validate(c.replace(max_train_epochs=120), summary())
    assert fields_of(too_long, "warning") == {"max_train_epochs"} and "12000" in too_long[0].message
    no_caps = validate(c, summary(captions=0))
    assert fields_of(no_caps, "warning") == {"keep_tokens"}
    assert validate(c.replace(keep_tokens=0), summary(captions=0)) == []
    some = validate(c, summary(captions=15))
    assert "5 of 20 images" in some[0].message
    bad = validate(c, summary(unreadable=[("dataset/x.png", "truncated")], duplicate_stems=["dataset/a"]))
    assert [(p.value, p.severity) for p in bad] == [("dataset/x.png", "warning"), ("dataset/a", "error")]
    missing = validate(c, DatasetSummary(folders=[FolderSummary("nope", False, 0, 0, 10)]))
    assert "does not exist" in missing[0].message


def test_derived_settings():
    c = TrainConfig()
    net = c.network_config()
    assert (net.dim, net.alpha, net.conv_dim, net.train_text_encoder) == (16, 8.0, None, True)
    locon = presets.with_network_type(c, "LoCon").network_config()
    assert (locon.conv_dim, locon.conv_alpha) == (8, 4.0)
    assert c.replace(text_encoder_lr=0.0).network_config().train_text_encoder is False
    sched = c.lr_schedule(1000)
    assert (sched.name, sched.warmup_steps, sched.num_cycles) == ("cosine_with_restarts", 50, 3)
    assert c.v_prediction("v") and not c.v_prediction("eps") and not c.replace(v_parameterization=False).v_prediction("v")
    assert c.v_pred_like_noise_pred(True) and not c.v_pred_like_noise_pred(False)
    assert c.noise_options(True).v_prediction and TrainConfig.sdxl_defaults().noise_options(False).multires_noise_iterations == 6
    assert c.bucketer().resos[0] == (256, 832)
    assert c.resolve_folders("/p")[0].path == "/p/dataset"


def test_presets_for_optimizers_and_networks():
    p = presets.with_optimizer(TrainConfig(), "Prodigy")
    assert (p.unet_lr, p.text_encoder_lr, p.network_alpha, p.lr_scheduler) == (0.5, 0.5, 16.0, "constant_with_warmup")
    assert p.optimizer_args == {"decouple": True, "weight_decay": 0.01, "betas": [0.9, 0.999], "d_coef": 2,
                                "use_bias_correction": True, "safeguard_warmup": True}
    x = presets.with_optimizer(TrainConfig.sdxl_defaults(), "Prodigy")
    assert (x.unet_lr, x.full_fp16, x.lr_scheduler) == (0.75, False, "cosine_with_restarts")
    assert presets.with_optimizer(TrainConfig.sdxl_defaults(), "CAME").optimizer_args == {"weight_decay": 0.04}
    assert presets.with_optimizer(TrainConfig(), "AdamW").optimizer_args == {}
    assert presets.with_network_type(TrainConfig.sdxl_defaults(), "LoCon").network_dim == 16
    assert presets.bucket_bounds_for("sd15", 768) == (320, 1280)
    with pytest.raises(ValueError):
        presets.with_optimizer(TrainConfig(), "Adam")


def test_kohya_toml_uses_kohyas_keys():
    training, dataset = TrainConfig.sdxl_defaults().replace(project_name="me").to_kohya_toml("/proj")
    flat = {k: v for section in training.values() for k, v in section.items()}
    assert flat["learning_rate"] == 3e-4 and flat["optimizer_type"] == "AdamW8bit"
    assert flat["optimizer_args"] == ["weight_decay=0.1", "betas=[0.9,0.99]"]
    assert flat["multires_noise_iterations"] == 6 and flat["output_name"] == "me" and flat["full_fp16"] is True
    assert "clip_skip" not in flat and "network_args" not in flat
    assert dataset["datasets"][0]["subsets"][0] == {"image_dir": "/proj/dataset", "num_repeats": 2}
    assert dataset["general"]["shuffle_caption"] is True
    assert toml_io.loads(toml_io.dumps(training))["optimizer_arguments"]["lr_scheduler"] == "cosine_with_restarts"
    locon, _ = TrainConfig().replace(network_type="LoCon").to_kohya_toml()
    assert locon["network_arguments"]["network_args"] == ["conv_dim=8", "conv_alpha=4.0"]
