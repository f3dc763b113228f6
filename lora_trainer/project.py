"""The project on disk: the Colab notebooks' `Loras` layout, so a user's existing folder opens as it is.

    <root>/<project>/dataset/        images + one caption file per image (same stem, .txt)
    <root>/<project>/output/         LoRA files when standalone
    <root>/<project>/project.toml    dataset and training settings, human-editable
    <root>/<project>/.trash/         everything the studio removed, restorable
    <root>/<project>/.cache/         latents, embeddings (safe to delete)
    <root>/_logs/                    loss logs

A project name is one path segment or `category/name`. Names become folder and file names on
Linux, macOS and Windows (`<project>-01.safetensors`), so the rules are Windows' plus ours.
"""

from __future__ import annotations

import os
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import toml_io
from .errors import StudioError

SCHEMA_VERSION = 1  # of project.toml; bump with a migration when a section changes meaning
MAX_SEGMENT_CHARS = 80  # leaves room for "-NN.safetensors" and the folder path within 255 bytes
LOGS_DIR = "_logs"
DEMO_MODEL = "demo-model.safetensors"  # a project's own tiny model (the demo, tests): Train and Compare find it

# Windows refuses these as file names, with or without an extension ("CON.txt" too).
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_FORBIDDEN_CHARS = set('<>:"\\|?*')
_DRIVE = re.compile(r"^[A-Za-z]:")


def in_project(project_dir: str | os.PathLike, text: str) -> Path:
    """A path as a project's settings write it: `~` expanded, and a relative one inside the project
    folder (dataset folders, the checkpoint, the output folder), so a project with its own files can move."""
    path = Path(text.strip()).expanduser()
    return path if path.is_absolute() else Path(project_dir) / path


def default_root() -> Path:
    """The standalone studio's root: $LORA_STUDIO_ROOT, else ./studio."""
    return Path(os.environ.get("LORA_STUDIO_ROOT", "studio")).absolute()


# ----------------------------------------------------------------------------------------------
# Names


def suggest_name(name: str) -> str:
    """A name close to `name` that passes `check_name` (used in error messages)."""
    name = unicodedata.normalize("NFC", name or "")
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _DRIVE.sub("", name).replace("\\", "/")
    segments = [s for s in name.split("/") if s.strip(" .")][:2] or ["my-lora"]
    fixed = []
    for s in segments:
        s = "".join("_" if ch in _FORBIDDEN_CHARS else ch for ch in s).strip(" .")
        s = s.lstrip("._") or "lora"
        stem, dot, rest = s.partition(".")
        if stem.upper() in _RESERVED:
            s = f"{stem}_{dot}{rest}"
        fixed.append(s[:MAX_SEGMENT_CHARS].rstrip(" ."))
    return "/".join(fixed)


def name_problem(name: str) -> str | None:
    """The rule `name` breaks, as a sentence, or None if it is a valid project name."""
    if not isinstance(name, str) or not name.strip():
        return "The project name is empty."
    if any(unicodedata.category(ch)[0] == "C" for ch in name):
        return "The project name contains a control character (such as a NUL byte or a newline)."
    if name.startswith(("/", "\\")) or _DRIVE.match(name) or os.path.isabs(name):
        return "The project name is an absolute path; it must be a name, not a path."
    if "\\" in name:
        return "The project name contains a backslash; use '/' only to separate a category from a name."
    segments = name.split("/")
    for s in segments:
        if s in ("", ".", ".."):
            return f"The project name has an empty, '.' or '..' part ({s!r})."
    if len(segments) > 2:
        return "The project name has more than two parts; use 'name' or 'category/name'."
    for s in segments:
        if bad := sorted({ch for ch in s if ch in _FORBIDDEN_CHARS}):
            return f"The project name contains {' '.join(bad)}, which Windows does not allow in file names."
        if s.split(".")[0].upper() in _RESERVED:
            return f"{s!r} is a reserved device name on Windows."
        if s != s.strip() or s.endswith("."):
            return f"The part {s!r} starts or ends with a space or ends with a dot."
        if s.startswith((".", "_")):
            return f"The part {s!r} starts with '.' or '_', which the studio keeps for its own folders."
        if len(s) > MAX_SEGMENT_CHARS:
            return f"The part {s[:20]!r}... is {len(s)} characters long; at most {MAX_SEGMENT_CHARS} are allowed."
    return None


def check_name(name: str) -> str:
    """Return the NFC-normalised name, or raise a StudioError naming the rule and a fixed name."""
    problem = name_problem(name)
    if problem:
        raise StudioError(problem, f"Try {suggest_name(name)!r}.")
    return unicodedata.normalize("NFC", name)


# ----------------------------------------------------------------------------------------------
# project.toml: typed where the studio owns a section, raw everywhere else


@dataclass
class ProjectFile:
    """The contents of project.toml.

    `sections` is the whole document as read, so keys this version does not know (written by a
    newer studio, or by the user) survive a load/save round trip. Each part of the studio reads
    and replaces only its own section (`[dataset]`, `[train]`, ...) and validates it with its own
    typed config.
    """

    schema_version: int = SCHEMA_VERSION
    sections: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        value = self.sections.get(name, {})
        return dict(value) if isinstance(value, dict) else {}

    def set_section(self, name: str, values: dict[str, Any]) -> None:
        self.sections[name] = dict(values)


def load_project_file(path: str | os.PathLike) -> ProjectFile:
    path = Path(path)
    if not path.exists():
        return ProjectFile()
    doc = toml_io.load(path)
    version = doc.pop("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StudioError(
            f"{path} was written by a newer LoRA Studio (schema {version}; this one reads up to {SCHEMA_VERSION}).",
            "Update LoRA Studio, or edit the file by hand.",
        )
    return ProjectFile(version, doc)


def save_project_file(path: str | os.PathLike, pf: ProjectFile) -> None:
    toml_io.save(path, {"schema_version": pf.schema_version, **pf.sections})


# ----------------------------------------------------------------------------------------------
# Projects


@dataclass(frozen=True)
class Project:
    root: Path
    name: str

    @property
    def dir(self) -> Path:
        return self.root.joinpath(*self.name.split("/"))

    @property
    def dataset_dir(self) -> Path:
        return self.dir / "dataset"

    @property
    def output_dir(self) -> Path:
        return self.dir / "output"

    @property
    def toml_path(self) -> Path:
        return self.dir / "project.toml"

    @property
    def trash_dir(self) -> Path:
        return self.dir / ".trash"

    @property
    def cache_dir(self) -> Path:
        return self.dir / ".cache"

    @property
    def logs_dir(self) -> Path:
        return self.root / LOGS_DIR

    @property
    def file_stem(self) -> str:
        """The stem of this project's LoRA files: the last part of the name (`char/alice` -> `alice`)."""
        return self.name.split("/")[-1]

    def checkpoint(self) -> Path | None:
        """The model this project renders and trains on when nothing else is named: its [train]
        checkpoint if that file exists, else its own demo model; None inside a WebUI's project
        without either (the WebUI's loaded model is meant)."""
        configured = self.load_file().section("train").get("checkpoint")
        if isinstance(configured, str) and configured.strip() and in_project(self.dir, configured).is_file():
            return in_project(self.dir, configured)
        demo = self.dir / DEMO_MODEL
        return demo if demo.is_file() else None

    def load_file(self) -> ProjectFile:
        return load_project_file(self.toml_path)

    def save_file(self, pf: ProjectFile) -> None:
        save_project_file(self.toml_path, pf)


def _is_project_dir(d: Path) -> bool:
    return (d / "project.toml").is_file() or (d / "dataset").is_dir()


def create_project(root: str | os.PathLike, name: str) -> Project:
    """Make the folders and a project.toml. An existing project is an error (open it instead)."""
    project = Project(Path(root).absolute(), check_name(name))
    if _is_project_dir(project.dir):
        raise StudioError(f"A project named {project.name!r} already exists in {project.root}.", "Open it, or pick another name.")
    for d in (project.dataset_dir, project.output_dir, project.logs_dir):
        d.mkdir(parents=True, exist_ok=True)
    pf = ProjectFile()
    pf.set_section("project", {"created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    project.save_file(pf)
    return project


def open_project(root: str | os.PathLike, name: str) -> Project:
    """Open an existing project. A Colab `Loras/<name>/dataset` folder without project.toml opens as it is."""
    project = Project(Path(root).absolute(), check_name(name))
    if not _is_project_dir(project.dir):
        known = list_projects(root)
        hint = f"Projects in {project.root}: {', '.join(known)}." if known else "Create it first."
        raise StudioError(f"There is no project {project.name!r} in {project.root}.", hint)
    return project


def list_projects(root: str | os.PathLike) -> list[str]:
    """Project names under root: folders with a project.toml or a dataset/ folder, one category level deep."""
    root = Path(root)
    names = []
    if not root.is_dir():
        return names
    for d in sorted(root.iterdir()):
        if not d.is_dir() or name_problem(d.name):
            continue
        if _is_project_dir(d):
            names.append(d.name)
        else:
            names.extend(f"{d.name}/{c.name}" for c in sorted(d.iterdir()) if c.is_dir() and not name_problem(c.name) and _is_project_dir(c))
    return names


def rename_project(root: str | os.PathLike, old: str, new: str) -> Project:
    """Rename a project's folder. LoRA files already saved keep their names (they are the user's files)."""
    src = open_project(root, old)
    dst = Project(src.root, check_name(new))
    if dst.dir.exists():
        raise StudioError(f"{dst.dir} already exists.", "Pick another name.")
    dst.dir.parent.mkdir(parents=True, exist_ok=True)
    os.rename(src.dir, dst.dir)
    return dst
