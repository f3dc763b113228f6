"""The training job on the tiny demo SD1.5 model: it learns, it saves what kohya saves, it stops cleanly.

One module-scoped run (4 epochs x 8 steps on 4 synthetic images at 256 px) serves most tests;
the NaN, cancel and keep-last-N tests make their own short runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lora_trainer.demo.dataset import ACTIVATION_TAG, make_demo_dataset
from lora_trainer.errors import Cancelled, StudioError
from lora_trainer.models.demo import write_demo_checkpoint
from lora_trainer.progress import CancelToken, ProgressEvent
from lora_trainer.project import create_project
from lora_trainer.train.config import DatasetFolder, TrainConfig

# Small and quick: one 75-token chunk, constant LR, AdamW, float32 on the CPU.
FAST = {"resolution": 256, "min_bucket_reso": 256, "bucket_no_upscale": True, "optimizer": "AdamW", "optimizer_args": {}, "mixed_precision": "no",
            "max_token_length": 75, "lr_scheduler": "constant", "lr_warmup_ratio": 0.0, "network_dim": 4, "network_alpha": 4.0,
            "save_every_n_epochs": 1, "keep_only_last_n_epochs": 0}


def make_project(root: Path, name: str = "demo", images: int = 4, repeats: int = 1):
    project = create_project(root, name)
    make_demo_dataset(project.dataset_dir, count=images, size=64)
    return project


def fast_config(repeats: int = 1, **changes) -> TrainConfig:
    return TrainConfig.sd15_defaults().replace(**{**FAST, "datasets": [DatasetFolder(repeats=repeats)], **changes})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_demo_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", "sd15", dtype="fp32")


def host_for(checkpoint: Path, project):
    from lora_trainer.host.standalone import StandaloneHost

    return StandaloneHost(checkpoint, lora_dirs=[project.output_dir], device="cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, checkpoint):
    """A finished run: 4 images x 4 repeats, batch 2 -> 8 steps per epoch, 4 epochs."""
    from lora_trainer.train.run import train_job

    project = make_project(tmp_path_factory.mktemp("root"))
    config = fast_config(repeats=4, max_train_epochs=4, unet_lr=5e-3, text_encoder_lr=1e-3)
    events: list[ProgressEvent] = []
    result = train_job(project, config, host_for(checkpoint, project), events.append)
    return project, config, result, events


def fixed_loss(bundle, config, project, lora: Path | None) -> float:
    """The loss over a fixed set of batches, noise and timesteps, with or without a LoRA file."""
    from lora_trainer.models.conditioning import SD15TextConditioner
    from lora_trainer.network.io import apply_loras
    from lora_trainer.network.network import LoRANetwork
    from lora_trainer.train import loop as L
    from lora_trainer.train.data import TrainData, latent_cache_for, load_dataset

    dataset = load_dataset(config, project.dir)
    cache = latent_cache_for(config, project.dir, lambda x: bundle.encode_images(x, torch.Generator().manual_seed(0)), "t")
    cache.prepare(dataset.items)
    data = TrainData.from_config(dataset, config.replace(shuffle_tags=False), cache)
    cond = SD15TextConditioner(bundle.text_encoders[0][1], bundle.tokenizer, config.clip_skip, 1, kohya_layout=True)
    model = L.DiffusionLoss(bundle, LoRANetwork("sd15"), cond, config.noise_options(False),
                            bundle.schedule.alphas_cumprod(), config.min_snr_gamma, False, False, None)
    with torch.no_grad(), apply_loras(bundle, [(lora, 1.0)] if lora else []):
        losses = [float(model(b, 1000 + i)) for i, b in enumerate(data.batches(1)) for _ in range(4)]
    return sum(losses) / len(losses)


def test_training_lowers_the_loss_and_the_lora_changes_the_prediction(trained, checkpoint):
    from lora_trainer.models.bundle import load_bundle
    from lora_trainer.network.io import apply_loras

    project, config, result, events = trained
    bundle = load_bundle(checkpoint)
    before = fixed_loss(bundle, config, project, None)
    after = fixed_loss(bundle, config, project, result.files[-1])
    assert after < 0.9 * before, (before, after)

    # The logged losses of the last epoch are lower than those of the first.
    steps = [e.extra for e in events if e.extra.get("step")]
    first = [s["loss"] for s in steps if s["epoch"] == 1]
    last = [s["loss"] for s in steps if s["epoch"] == 4]
    assert sum(last) / len(last) < sum(first) / len(first)

    # With the activation tag, the UNet's prediction differs with the LoRA on.
    x = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([500])
    with torch.no_grad():
        context = bundle.encode_prompts([f"{ACTIVATION_TAG}, red circle"]).context
        plain = bundle.predict(x, t, context)
        with apply_loras(bundle, [(result.files[-1], 1.0)]):
            context_l = bundle.encode_prompts([f"{ACTIVATION_TAG}, red circle"]).context
            with_lora = bundle.predict(x, t, context_l)
    assert (with_lora - plain).abs().mean() > 1e-3 * plain.abs().mean()
    assert not torch.equal(context, context_l)  # the text-encoder LoRA was trained too


def test_epoch_files_are_named_and_load_with_kohya_metadata(trained, checkpoint):
    from lora_trainer.models.bundle import load_bundle
    from lora_trainer.network.io import network_from_file, read_lora_file

    project, _config, result, _ = trained
    names = sorted(p.name for p in project.output_dir.glob("*.safetensors"))
    assert names == ["demo-01.safetensors", "demo-02.safetensors", "demo-03.safetensors", "demo-04.safetensors"]
    assert [p.name for p in result.files] == names
    lora = read_lora_file(result.files[1])
    meta = lora.metadata
    assert meta["ss_epoch"] == "2" and meta["ss_steps"] == "16" and meta["ss_num_epochs"] == "4"
    assert meta["ss_output_name"] == "demo-02"
    assert meta["ss_network_dim"] == "4" and meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_optimizer"] == "torch.optim.adamw.AdamW"
    assert json.loads(meta["ss_tag_frequency"])["dataset"][ACTIVATION_TAG] == 4
    assert json.loads(meta["ss_dataset_dirs"]) == {"dataset": {"n_repeats": 4, "img_count": 4}}
    assert json.loads(meta["ss_bucket_info"])["buckets"]["0"] == {"resolution": [64, 64], "count": 16}
    assert meta["ss_session_id"] == read_lora_file(result.files[0]).metadata["ss_session_id"]
    assert lora.dtypes == ["float16"] and lora.counts() == {"unet": 120, "te": 18}
    _network, report = network_from_file(load_bundle(checkpoint), result.files[1])
    assert report.loaded == 138 and not report.unknown_keys


def test_loss_csv_has_one_row_per_step_and_events_carry_the_numbers(trained):
    from lora_trainer.train.logs import read_log

    project, _, result, events = trained
    assert result.loss_log.parent == project.root / "_logs"
    rows = read_log(result.loss_log)
    assert [int(r["step"]) for r in rows] == list(range(1, 33))
    assert [int(r["epoch"]) for r in rows] == [e for e in range(1, 5) for _ in range(8)]
    assert all(float(r["lr_unet"]) == pytest.approx(5e-3) and float(r["lr_te"]) == pytest.approx(1e-3) for r in rows)
    steps = [e for e in events if e.extra.get("step")]
    assert len(steps) == 32
    assert set(steps[-1].extra) >= {"step", "total_steps", "epoch", "loss", "avg_loss", "lr_unet", "lr_te", "it_s", "mem_gb"}
    assert steps[-1].fraction == 1.0 and steps[-1].extra["total_steps"] == 32 and steps[-1].extra["mem_gb"] > 0
    epoch1 = [e.extra["loss"] for e in steps if e.extra["epoch"] == 1]
    assert steps[7].extra["avg_loss"] == pytest.approx(sum(epoch1) / 8)
    assert result.steps_done == 32 and result.epochs_done == 4


def test_base_model_is_left_as_it_was(trained, checkpoint):
    """The borrowed tensors are not written to, and flags and modes are restored."""
    from lora_trainer.host.standalone import StandaloneHost
    from lora_trainer.models.bundle import load_bundle
    from lora_trainer.train.run import train_job

    project = make_project(trained[0].root, "base")
    host = StandaloneHost(checkpoint, device="cpu")
    bundle = host.bundle()
    before = {k: v.clone() for k, v in bundle.unet.state_dict().items()}
    train_job(project, fast_config(max_train_epochs=1, gradient_checkpointing=True), host)
    assert all(torch.equal(before[k], v) for k, v in bundle.unet.state_dict().items())
    assert not any(p.requires_grad for m in bundle.modules().values() for p in m.parameters())
    assert bundle.unet.gradient_checkpointing is False and not bundle.unet.training
    assert not any(m._forward_hooks for mod in bundle.modules().values() for m in mod.modules())  # hooks off
    fresh = load_bundle(checkpoint)
    assert all(torch.equal(fresh.unet.state_dict()[k], v) for k, v in before.items())


def test_nan_loss_stops_at_once_and_keeps_the_previous_epoch(tmp_path, checkpoint, monkeypatch):
    from lora_trainer.train import loop as L
    from lora_trainer.train.run import train_job

    project = make_project(tmp_path)
    real = L.training_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 3 else loss  # one batch per step, 2 steps per epoch: step 4 fails

    monkeypatch.setattr(L, "training_loss", poisoned)
    config = fast_config(max_train_epochs=3)
    with pytest.raises(StudioError) as err:
        train_job(project, config, host_for(checkpoint, project))
    assert "NaN at step 4 (epoch 2)" in err.value.message and "demo-01.safetensors" in err.value.message
    assert "learning rate" in err.value.fix
    assert sorted(p.name for p in project.output_dir.glob("*.safetensors")) == ["demo-01.safetensors"]
    from lora_trainer.network.io import read_lora_file

    lora = read_lora_file(project.output_dir / "demo-01.safetensors")
    assert all(torch.isfinite(m.up).all() and torch.isfinite(m.down).all() for m in lora.modules.values())


def test_cancel_between_steps_keeps_the_saved_epoch_and_writes_nothing_half(tmp_path, checkpoint):
    from lora_trainer.train.run import train_job

    project = make_project(tmp_path)
    token = CancelToken()

    def progress(e: ProgressEvent) -> None:
        if e.extra.get("step") == 3:  # inside epoch 2 (2 steps per epoch)
            token.cancel()

    with pytest.raises(Cancelled):
        train_job(project, fast_config(max_train_epochs=3), host_for(checkpoint, project), progress, token)
    assert sorted(p.name for p in project.output_dir.iterdir()) == ["demo-01.safetensors"]
    assert [p.name for p in (project.dir / ".cache" / "state").iterdir()] == ["demo-01-state.pt"]


def test_keep_last_n_moves_older_epochs_to_the_trash(tmp_path, checkpoint):
    from lora_trainer.train.run import train_job
    from lora_trainer.trash import list_batches

    project = make_project(tmp_path)
    result = train_job(project, fast_config(max_train_epochs=3, keep_only_last_n_epochs=2, save_every_n_epochs=1),
                       host_for(checkpoint, project))
    assert sorted(p.name for p in project.output_dir.glob("*.safetensors")) == ["demo-02.safetensors", "demo-03.safetensors"]
    batches = list_batches(project.dir)
    assert [b.files for b in batches] == [("output/demo-01.safetensors",)]
    assert (project.trash_dir / batches[0].batch_id / "files" / "output" / "demo-01.safetensors").is_file()
    assert [p.name for p in (project.dir / ".cache" / "state").iterdir()] == ["demo-03-state.pt"]
    assert len(result.files) == 3

    # A new run replaces the files of the earlier one; those go to the trash too, never deleted.
    train_job(project, fast_config(max_train_epochs=2), host_for(checkpoint, project))
    trashed = sorted(f for b in list_batches(project.dir) for f in b.files)
    assert trashed == ["output/demo-01.safetensors", "output/demo-02.safetensors"]


def test_settings_problems_are_all_reported_before_the_model_is_borrowed(tmp_path):
    from lora_trainer.train.run import train_job

    class NoHost:
        def borrow_bundle(self):
            raise AssertionError("the model must not be touched before validation passes")

        def lora_output_dir(self, project):
            return project.output_dir

    project = make_project(tmp_path)
    bad = fast_config(unet_lr=0.0, network_dim=0)
    with pytest.raises(StudioError) as err:
        train_job(project, bad, NoHost())
    assert "unet_lr" in err.value.message and "network_dim" in err.value.message


def test_missing_optimizer_package_says_how_to_install(monkeypatch):
    import builtins

    from lora_trainer.train.loop import make_optimizer

    real_import = builtins.__import__

    def no_bnb(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    with pytest.raises(StudioError) as err:
        make_optimizer("AdamW8bit", [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-3}], {}, torch.device("cpu"))
    assert "pip install bitsandbytes" in err.value.fix


def test_dry_run_counts_the_network_without_loading_weights(tmp_path, checkpoint, monkeypatch):
    from lora_trainer.models import bundle as bundle_mod
    from lora_trainer.train.run import dry_run, dry_run_info, network_plan

    def refuse(*a, **k):
        raise AssertionError("dry_run must not load a model")

    monkeypatch.setattr(bundle_mod, "load_bundle", refuse)
    project = make_project(tmp_path)
    text = dry_run(project, fast_config(repeats=3, max_train_epochs=5))
    assert "4 images x 3 repeats = 12 steps" in text and "unet 192, te 72" in text
    info = dry_run_info(project, fast_config(repeats=3, max_train_epochs=5))
    assert info["steps"]["total_steps"] == 30 and info["buckets"] == {"64x64": 12}
    # kohya's real SD1.5 counts (reference 1.4): dim 4 -> 192 + 72 modules
    assert info["network"]["modules"] == {"unet": 192, "te": 72}
    sdxl = network_plan(TrainConfig.sdxl_defaults().replace(network_type="LoCon"))
    assert sdxl["modules"]["te1"] == 72 and sdxl["modules"]["te2"] == 192
    # With a checkpoint file the header's shapes are counted (the tiny model), still without loading it.
    tiny = network_plan(fast_config(checkpoint=str(checkpoint)))
    assert tiny["trainable_parameters"] == 110_336 < info["network"]["trainable_parameters"] / 10


def test_cli_dry_run_json_and_a_run_from_project_toml(tmp_path, checkpoint, capsys):
    from lora_trainer.cli import main

    project = make_project(tmp_path)
    pf = project.load_file()
    pf.set_section("train", {k: v for k, v in fast_config(max_train_epochs=1).to_toml_dict().items() if v is not None})
    project.save_file(pf)
    assert main(["train", "--config", str(project.toml_path), "--dry-run", "--json", "--set", "max_train_epochs=3",
                 "--set", 'network_type="LoCon"']) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["steps"]["total_steps"] == 6 and info["network"]["network"] == "LoCon"
    assert info["network"]["modules"]["unet"] > 192  # LoCon adds the ResBlock convs

    assert main(["train", "--project", "demo", "--root", str(tmp_path), "--checkpoint", str(checkpoint), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert Path(result["last_file"]).name == "demo-01.safetensors" and result["steps_done"] == 2
    assert main(["train", "--project", "demo", "--root", str(tmp_path), "--set", "unet_lr=oops"]) == 2
    assert "unet_lr" in capsys.readouterr().err


def test_default_adamw8bit_falls_back_to_adamw_where_it_cannot_run(monkeypatch):
    import builtins

    from lora_trainer.train.loop import available_optimizer

    assert available_optimizer("Prodigy", torch.device("cpu")) == ("Prodigy", "")
    name, note = available_optimizer("AdamW8bit", torch.device("cpu"))
    assert name == "AdamW" and "needs a CUDA GPU" in note
    real_import = builtins.__import__

    def no_bnb(mod, *args, **kwargs):
        if mod == "bitsandbytes":
            raise ImportError(mod)
        return real_import(mod, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    name, note = available_optimizer("AdamW8bit", torch.device("cuda"))
    assert name == "AdamW" and "pip install bitsandbytes" in note
