"""What a run leaves on disk: epoch files, the training state beside them, and their pruning.

Epoch files are `<stem>-NN.safetensors` (two digits, as the guide's notebooks name them; a run of
100 epochs or more uses three). Beside each saved epoch, `<project>/.cache/state/<stem>-NN-state.pt`
holds everything `train --resume` needs to continue as if the run had never stopped:

- the LoRA tensors in float32 (the epoch file is usually fp16: not enough to continue exactly),
- the optimizer state and the GradScaler state (fp16 runs),
- step and epoch (the LR schedule is a pure function of the step, so the step is its position),
- the RNG states of python, numpy and torch (CPU and CUDA),
- the config as its TOML dict, the session id and start time (shared by every epoch file of a run).

The data order needs no saved position: batches are a function of (seed, epoch, batch index)
(train/data.py) and a state is written only at an epoch end, so a resumed run starts at batch 0 of
the next epoch. Every random draw of a step is seeded from (seed, epoch, batch index) too (see
loop.py), which is why a resumed run equals an uninterrupted one exactly on the CPU; the saved RNG
states are restored all the same, for anything outside the loop that draws from them.

States are loaded with `torch.load(weights_only=True)`: only tensors and plain values, so a state
file can not run code.
"""

from __future__ import annotations

import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import StudioError
from ..fileio import atomic_path
from ..network.epochs import epoch_stem, own_epoch_of

STATE_VERSION = 1
STATE_DIR = Path(".cache") / "state"

# Settings that change what the saved tensors mean or how the run continues: a resume with any
# of them changed is refused. Others (samples, saving, epochs) may change between the two runs.
RESUME_LOCKED = (
    "arch", "network_type", "network_dim", "network_alpha", "conv_dim", "conv_alpha", "text_encoder_lr",
    "cache_text_encoder_outputs", "optimizer", "optimizer_args", "train_batch_size", "gradient_accumulation_steps",
    "seed", "datasets", "resolution", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_no_upscale",
    "bucket_reso_steps", "unit", "max_train_steps", "lr_scheduler", "lr_scheduler_num_cycles", "lr_scheduler_power",
    "lr_warmup_ratio", "unet_lr",
)


def state_file(project_dir: str | Path, stem: str, epoch: int, total_epochs: int = 0) -> Path:
    return Path(project_dir) / STATE_DIR / f"{epoch_stem(stem, epoch, total_epochs)}-state.pt"


def saved_states(project_dir: str | Path, stem: str) -> dict[int, Path]:
    """{epoch: state file} under `<project>/.cache/state/`."""
    d = Path(project_dir) / STATE_DIR
    out = {}
    if d.is_dir():
        for p in d.iterdir():
            n = own_epoch_of(p.name, stem, "-state.pt")
            if n is not None:
                out[n] = p
    return dict(sorted(out.items()))


# ---- RNG -------------------------------------------------------------------------------------


def rng_states() -> dict[str, Any]:
    """python, numpy, torch CPU and every CUDA device's RNG state, as plain values and tensors."""
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    out: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(states: dict[str, Any]) -> None:
    py = states["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        cuda = states["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


# ---- the state -------------------------------------------------------------------------------


@dataclass
class TrainState:
    """A run's position after `epoch` epochs (`step` optimizer steps)."""

    epoch: int
    step: int
    network: dict[str, torch.Tensor]  # the LoRA state dict, float32, CPU
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None = None
    rng: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # TrainConfig.to_toml_dict()
    session_id: int = 0
    training_started_at: float = 0.0
    avg_loss: float = 0.0  # the running mean at the save, so the resumed log continues it
    version: int = STATE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def save_state(path: str | Path, state: TrainState) -> Path:
    """Write the state atomically (a crash mid-write leaves the previous file, or none)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(_to_cpu(state.to_dict()), tmp)
    return path


def load_state(path: str | Path) -> TrainState:
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:  # torn or foreign files
        raise StudioError(f"The training state {path} can not be read ({e}).",
                          "Resume from an earlier epoch by moving this file away, or start the run again.") from None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise StudioError(f"{path} is not a training state this version of LoRA Studio writes.",
                          "Start the run again without --resume.")
    return TrainState(**{k: data[k] for k in TrainState.__dataclass_fields__ if k in data})


def resume_mismatches(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The locked settings whose values differ between the saved run and this one, as sentences."""
    out = []
    for key in RESUME_LOCKED:
        if saved.get(key) != current.get(key):
            out.append(f"{key} was {saved.get(key)!r}, now {current.get(key)!r}")
    return out


# ---- keep the last N -------------------------------------------------------------------------


def files_to_prune(epochs: dict[int, Path], keep_last: int) -> list[int]:
    """Epochs whose files go to the trash when only the last `keep_last` are kept (0 = keep all)."""
    if keep_last <= 0 or len(epochs) <= keep_last:
        return []
    return sorted(epochs)[:-keep_last]
