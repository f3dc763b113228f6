"""`train --resume` continues a stopped run exactly: 1 epoch + stop + resume == 2 epochs straight."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lora_trainer.errors import Cancelled, StudioError
from lora_trainer.progress import CancelToken, ProgressEvent
from tests.test_train_loop import checkpoint, fast_config, host_for, make_project  # noqa: F401 (fixture)

# Everything that draws random numbers is on: tag shuffle, tag dropout, flips, LoRA dropout,
# noise offset and multires noise; two micro-steps per update; AdamW state; a warmup + cosine LR.
RANDOM = {"flip_aug": True, "shuffle_tags": True, "caption_tag_dropout_rate": 0.2, "network_dropout": 0.1, "noise_offset": 0.05,
              "multires_noise_iterations": 3, "gradient_accumulation_steps": 2, "lr_scheduler": "cosine", "lr_warmup_ratio": 0.2,
              "max_train_epochs": 2, "unet_lr": 2e-3}


def final_state(project, epoch: int) -> dict[str, torch.Tensor]:
    from lora_trainer.train.state import load_state

    return load_state(project.dir / ".cache" / "state" / f"demo-{epoch:02d}-state.pt").network


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, checkpoint):  # noqa: F811
    from lora_trainer.train.logs import read_log
    from lora_trainer.train.run import train_job

    config = fast_config(repeats=2, **RANDOM)  # 8 samples, batch 2, accumulation 2: 2 steps per epoch

    straight = make_project(tmp_path / "a")
    train_job(straight, config, host_for(checkpoint, straight))

    stopped = make_project(tmp_path / "b")
    token = CancelToken()

    def stop_in_epoch_2(e: ProgressEvent) -> None:
        if e.extra.get("step") == 3:
            token.cancel()

    with pytest.raises(Cancelled):
        train_job(stopped, config, host_for(checkpoint, stopped), stop_in_epoch_2, token)
    assert not (stopped.output_dir / "demo-02.safetensors").exists()
    # Something else in the process draws random numbers between the two runs.
    random.random(), np.random.rand(), torch.rand(3)
    result = train_job(stopped, config, host_for(checkpoint, stopped), resume=True)
    assert result.resumed_from_epoch == 1 and [p.name for p in result.files] == ["demo-02.safetensors"]

    a, b = final_state(straight, 2), final_state(stopped, 2)
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-6, worst
    assert any(a[k].abs().sum() > 0 for k in a if "lora_up" in k)  # it did train
    # The resumed log has the rows of epoch 2 only, with the same losses.
    rows_a = read_log(max((tmp_path / "a" / "_logs").glob("*.csv")))
    rows_b = read_log(result.loss_log)
    assert [r["step"] for r in rows_b] == ["3", "4"]
    assert [float(r["loss"]) for r in rows_b] == pytest.approx([float(r["loss"]) for r in rows_a[2:]], abs=1e-5)
    # Both epoch-2 files carry the same session id as their run's epoch 1.
    from lora_trainer.network.io import read_lora_file

    ids = {read_lora_file(stopped.output_dir / f"demo-0{n}.safetensors").metadata["ss_session_id"] for n in (1, 2)}
    assert len(ids) == 1


def test_resume_refuses_changed_settings_and_a_missing_state(tmp_path, checkpoint):  # noqa: F811
    from lora_trainer.train.run import train_job

    project = make_project(tmp_path)
    with pytest.raises(StudioError, match="no saved training state"):
        train_job(project, fast_config(), host_for(checkpoint, project), resume=True)
    train_job(project, fast_config(max_train_epochs=2), host_for(checkpoint, project))
    with pytest.raises(StudioError) as err:
        train_job(project, fast_config(max_train_epochs=3, network_dim=8, unet_lr=1e-3), host_for(checkpoint, project), resume=True)
    assert "network_dim was 4, now 8" in err.value.message and "unet_lr" in err.value.message
    with pytest.raises(StudioError, match="already finished all 2 epochs"):
        train_job(project, fast_config(max_train_epochs=2), host_for(checkpoint, project), resume=True)
    # More epochs than the saved run: allowed, continues at epoch 3.
    result = train_job(project, fast_config(max_train_epochs=3), host_for(checkpoint, project), resume=True)
    assert [p.name for p in result.files] == ["demo-03.safetensors"] and result.steps_done == 6


def test_state_round_trip_keeps_rng_and_refuses_foreign_files(tmp_path):
    from lora_trainer.train.state import (
        TrainState,
        load_state,
        rng_states,
        save_state,
        set_rng_states,
    )

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = save_state(tmp_path / "s.pt", TrainState(epoch=1, step=5, network={"a": torch.ones(2)},
                                                   optimizer={"state": {}, "param_groups": []}, rng=rng_states()))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    state = load_state(path)
    set_rng_states(state.rng)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert state.step == 5 and torch.equal(state.network["a"], torch.ones(2))

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a state")
    with pytest.raises(StudioError, match="can not be read"):
        load_state(bad)
    torch.save({"version": 99}, tmp_path / "future.pt")
    with pytest.raises(StudioError, match="not a training state"):
        load_state(tmp_path / "future.pt")


def test_epoch_names_and_pruning_rules():
    from lora_trainer.network.epochs import epoch_stem
    from lora_trainer.train.state import files_to_prune

    assert epoch_stem("alice", 3) == "alice-03" and epoch_stem("alice", 3, 120) == "alice-003"
    files = {n: Path(f"x-{n:02d}.safetensors") for n in range(1, 6)}
    assert files_to_prune(files, 2) == [1, 2, 3] and files_to_prune(files, 0) == [] and files_to_prune(files, 9) == []
