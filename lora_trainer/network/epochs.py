"""A run's LoRA files on disk: their names, and finding them again.

Training saves epoch N of run `alice` as `alice-NN.safetensors` (two digits, as the guide's
notebooks name them; three for a run of 100 epochs or more); a final file of a run, as kohya's
trainers write it, is `alice.safetensors`. Two readings of a name, on purpose:

- `saved_epochs` (our own runs: resume, pruning) takes only the 2-3 digit names training writes,
  so pruning never touches a user's `alice-2024.safetensors`;
- `find_epoch_files` (Compare: any run, also kohya's `alice-000004`) takes any number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import StudioError

LORA_SUFFIX = ".safetensors"
_ANY_EPOCH = re.compile(r"^(?P<stem>.+)-(?P<n>\d+)$")


def epoch_stem(stem: str, epoch: int, total_epochs: int = 0) -> str:
    """`alice`, 3 -> `alice-03` (three digits when the run has 100 epochs or more)."""
    digits = 3 if max(epoch, total_epochs) >= 100 else 2
    return f"{stem}-{epoch:0{digits}d}"


def epoch_file(output_dir: str | Path, stem: str, epoch: int, total_epochs: int = 0) -> Path:
    return Path(output_dir) / f"{epoch_stem(stem, epoch, total_epochs)}{LORA_SUFFIX}"


def own_epoch_of(name: str, stem: str, suffix: str = LORA_SUFFIX) -> int | None:
    """N of a file name `<stem>-NN<suffix>` as training writes it (2-3 digits), else None."""
    m = re.fullmatch(re.escape(stem) + r"-(\d{2,3})" + re.escape(suffix), name)
    return int(m.group(1)) if m else None


def saved_epochs(output_dir: str | Path, stem: str, suffix: str = LORA_SUFFIX) -> dict[int, Path]:
    """{epoch: file} of the `<stem>-NN<suffix>` files training wrote in `output_dir`, by epoch."""
    d = Path(output_dir)
    out = {}
    if d.is_dir():
        for p in d.iterdir():
            n = own_epoch_of(p.name, stem, suffix)
            if n is not None:
                out[n] = p
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class EpochFile:
    """One LoRA file of a run: an epoch, or the final file (epoch None)."""

    stem: str  # file stem = the name in `<lora:stem:w>`
    epoch: int | None
    path: Path

    @property
    def label(self) -> str:
        return self.stem if self.epoch is not None else f"{self.stem} (final)"


def split_epoch_stem(file_stem: str) -> tuple[str, int] | None:
    """`alice-03` -> ("alice", 3); None when the name has no epoch number."""
    m = _ANY_EPOCH.match(file_stem)
    return (m["stem"], int(m["n"])) if m else None


def run_stems(lora_dir: Path) -> list[str]:
    """The run names in a folder: stems X of `X-NN.safetensors` files."""
    return sorted({s[0] for p in lora_dir.glob("*" + LORA_SUFFIX) if (s := split_epoch_stem(p.stem))})


def find_epoch_files(lora_dir: str | Path, stem: str | None = None) -> list[EpochFile]:
    """The epoch files of run `stem` in `lora_dir`, by epoch, then the final file if present.

    `stem` None: the folder must hold one run (one X of `X-NN.safetensors`), else it must be named.
    """
    lora_dir = Path(lora_dir)
    if not lora_dir.is_dir():
        raise StudioError(f"The LoRA folder {lora_dir} does not exist.", "Train the project first, or pick the folder that holds its LoRA files.")
    if stem is None:
        stems = run_stems(lora_dir)
        if len(stems) != 1:
            finals = sorted(p.stem for p in lora_dir.glob("*" + LORA_SUFFIX))
            if not stems and len(finals) == 1:
                stem = finals[0]
            elif not stems:
                raise StudioError(f"{lora_dir} holds no LoRA epoch files (NAME-01.safetensors, ...).", "Train the project first, or pick another folder.")
            else:
                raise StudioError(f"{lora_dir} holds the files of several runs: {', '.join(stems)}.", "Say which one (the file name without -NN.safetensors).")
        else:
            stem = stems[0]
    files = [EpochFile(p.stem, s[1], p) for p in lora_dir.glob("*" + LORA_SUFFIX) if (s := split_epoch_stem(p.stem)) and s[0] == stem]
    files.sort(key=lambda f: f.epoch)
    final = lora_dir / (stem + LORA_SUFFIX)
    if final.is_file():
        files.append(EpochFile(stem, None, final))
    if not files:
        raise StudioError(f"{lora_dir} holds no LoRA files of {stem!r} ({stem}-01{LORA_SUFFIX}, ...).", "Check the name, or train the project first.")
    return files
