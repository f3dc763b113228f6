"""Two CPU processes (gloo) with DistributedDataParallel over the LoRA.

What holds (distributed.py): N processes with accumulation A train exactly what one process with
accumulation N*A trains (same batches, same noise, averaged gradients, same LR schedule), up to the
order of float additions in the all-reduce. The run below has 5 batches per epoch, so its last
step is uneven: process 1 has no batch there and contributes a zero-weight stand-in.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from tests.test_train_loop import checkpoint, fast_config, make_project  # noqa: F401 (fixture)

SETTINGS = {"repeats": 1, "train_batch_size": 1, "max_train_epochs": 2, "flip_aug": True, "network_dropout": 0.1,
                "lr_scheduler": "cosine", "lr_warmup_ratio": 0.2, "unet_lr": 2e-3}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str, ckpt: str, config: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from lora_trainer.host.standalone import StandaloneHost
    from lora_trainer.project import Project
    from lora_trainer.train import distributed as D
    from lora_trainer.train.config import TrainConfig
    from lora_trainer.train.run import train_job

    info = D.init_from_env("gloo")
    with D.process_group(info):
        # 1. our DDP wrapper averages gradients: rank r's loss is (r + 1) * sum(w)
        toy = torch.nn.Linear(3, 1, bias=False)
        torch.nn.init.ones_(toy.weight)
        wrapped = D.wrap(toy, info, torch.device("cpu"))
        wrapped(torch.full((1, 3), float(rank + 1))).sum().backward()
        torch.save(toy.weight.grad, Path(root) / f"toy_grad_{rank}.pt")
        # 2. a training run
        project = Project(Path(root), "ddp")
        result = train_job(project, TrainConfig.from_toml_dict(config), StandaloneHost(ckpt, device="cpu"))
        torch.save({"files": [str(p) for p in result.files], "log": str(result.loss_log)}, Path(root) / f"result_{rank}.pt")


def test_two_processes_equal_one_with_double_accumulation(tmp_path, checkpoint):  # noqa: F811
    import torch.multiprocessing as mp

    from lora_trainer.host.standalone import StandaloneHost
    from lora_trainer.models.bundle import load_bundle
    from lora_trainer.network.io import network_from_file
    from lora_trainer.train.run import train_job
    from lora_trainer.train.state import load_state

    ddp_project = make_project(tmp_path, "ddp", images=5)
    config = fast_config(**SETTINGS)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), str(checkpoint), config.to_toml_dict()), nprocs=2, join=True)

    # gradients were averaged: mean of 1*ones and 2*ones
    for rank in (0, 1):
        assert torch.allclose(torch.load(tmp_path / f"toy_grad_{rank}.pt"), torch.full((1, 3), 1.5))

    # only process 0 wrote files; they load
    r0, r1 = torch.load(tmp_path / "result_0.pt"), torch.load(tmp_path / "result_1.pt")
    assert [Path(p).name for p in r0["files"]] == ["ddp-01.safetensors", "ddp-02.safetensors"] and r1["files"] == []
    assert len(list((tmp_path / "_logs").glob("*.csv"))) == 1
    _, report = network_from_file(load_bundle(checkpoint), r0["files"][-1])
    assert report.loaded == 138

    # one process, accumulation 2, same everything else
    single = make_project(tmp_path / "single", "ddp", images=5)
    train_job(single, config.replace(gradient_accumulation_steps=2), StandaloneHost(checkpoint, device="cpu"))
    a = load_state(ddp_project.dir / ".cache" / "state" / "ddp-02-state.pt")
    b = load_state(single.dir / ".cache" / "state" / "ddp-02-state.pt")
    assert a.step == b.step == 6  # ceil(5 batches / 2) x 2 epochs
    # Adam divides by sqrt(v): where a gradient is ~0, one ulp of all-reduce rounding moves a weight
    # by a visible fraction of lr (2e-3). So: the losses agree to float precision, the weights to 1e-4.
    from lora_trainer.train.logs import read_log

    loss_a = [float(r["loss"]) for r in read_log(r0["log"])]
    loss_b = [float(r["loss"]) for r in read_log(next((single.root / "_logs").glob("*.csv")))]
    assert loss_a == pytest.approx(loss_b, rel=1e-5) and len(loss_a) == 6
    worst = max((a.network[k] - b.network[k]).abs().max().item() for k in a.network)
    assert worst < 1e-4, worst
    assert max(a.network[k].abs().max().item() for k in a.network if "lora_up" in k) > 1e-3  # it trained
