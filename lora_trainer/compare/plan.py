"""The plan of an epochs x weights grid: which files, which weights, which prompts, which cells.

A plan is pure data (JSON-able, saved beside the grid) built from a folder of one run's LoRA files:
`<stem>-01.safetensors`, `<stem>-02.safetensors`, ... (any number of digits, so kohya's
`-000001` works too) and the final `<stem>.safetensors`.

Prompts are made the way the WebUI's X/Y/Z plot makes them (compare/xyz.py): the template prompt
holds `<lora:<first epoch>:<first weight>>`, the epoch axis is a Prompt S/R over the full file
stem (`demo-01`, not just `-01`: `-01` also matches any other LoRA in the prompt whose file ends in
`-01`, say a style LoRA), the weight axis a Prompt S/R over `:<weight>>` with both delimiters (a
bare `0.5` would also hit `0.5` inside an emphasis like `(red:0.5)`). Every cell is checked
against the prompt built directly from its epoch and weight; when the short search strings would
touch other text, longer ones (`<lora:demo-01:`, `demo-01:0.5>`) are tried, and a plan no search
string makes exact is refused. So our grid and the WebUI's X/Y/Z plot with the exported axes make
the same prompts.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StudioError
from ..host.base import GenerationRequest, parse_lora_tags
from ..network.epochs import EpochFile, find_epoch_files, split_epoch_stem
from . import xyz

DEFAULT_WEIGHTS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # the default: where a LoRA usually starts to show
DEFAULT_SEEDS = (1,)  # fixed, so grids made after each epoch are comparable with each other
MAX_COMMON_TAGS = 8  # default prompt: the activation tags plus this many of the most common tags
MIN_TAG_SHARE = 0.25  # ... each in at least this share of the images (rarer ones are details)
NO_LORA_LABEL = "no LoRA"
PLAN_VERSION = 1

# ---- 1. the files of a run ---------------------------------------------------------------------


def select_epochs(files: Sequence[EpochFile], spec: str | Sequence[int | str] = "all") -> list[EpochFile]:
    """Pick epochs: "all"; "every:K" (epochs divisible by K, and the final file); or a list such as
    "1,3,5" / [1, 3, "final"]. The result keeps the run's order (epochs ascending, final last)."""
    available = ", ".join(f.label for f in files)
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("", "all"):
            return list(files)
        if text.startswith("every:"):
            try:
                k = int(text.split(":", 1)[1])
            except ValueError:
                k = 0
            if k < 1:
                raise StudioError(f"Epoch selection {spec!r}: K must be a whole number of 1 or more.", "Write every:2 for epochs 2, 4, 6, ...")
            chosen = [f for f in files if f.epoch is None or f.epoch % k == 0]
            if not chosen:
                raise StudioError(f"No saved epoch is a multiple of {k}: the run has {available}.", "Pick a smaller K, or list the epochs.")
            return chosen
        items: Sequence[int | str] = [t.strip() for t in text.split(",") if t.strip()]
    else:
        items = spec
    wanted: set[int | None] = set()
    for item in items:
        if isinstance(item, str) and item.lower() in ("final", "last"):
            wanted.add(None)
            continue
        try:
            wanted.add(int(item))
        except (TypeError, ValueError):
            raise StudioError(f"Epoch {item!r} is not a number.", 'Write epochs as "all", "every:K" or a list like 1,3,5 (or "final").') from None
    have = {f.epoch for f in files}
    missing = sorted((str(e) if e is not None else "final") for e in wanted - have)
    if missing:
        raise StudioError(f"Epoch(s) {', '.join(missing)} not found; the run has {available}.", "Pick saved epochs.")
    chosen = [f for f in files if f.epoch in wanted]
    if not chosen:
        raise StudioError("No epochs were chosen.", f"Pick some of: {available}.")
    return chosen


def parse_weights(text: str | Sequence[float]) -> list[float]:
    """ "0.5, 0.75, 1" -> [0.5, 0.75, 1.0]; each weight once."""
    items = [t.strip() for t in text.split(",") if t.strip()] if isinstance(text, str) else list(text)
    weights = []
    for item in items:
        try:
            weights.append(float(item))
        except (TypeError, ValueError):
            raise StudioError(f"LoRA weight {item!r} is not a number.", "Write weights like 0.5,0.75,1.") from None
    if not weights:
        raise StudioError("No LoRA weights were given.", "Write weights like 0.5,0.75,1.")
    seen = set()
    for w in weights:
        if format_weight(w) in seen:
            raise StudioError(f"LoRA weight {format_weight(w)} is listed twice.", "List each weight once.")
        seen.add(format_weight(w))
    return weights


def format_weight(w: float) -> str:
    """0.5 -> "0.5", 1.0 -> "1": short, and what a WebUI user would type."""
    return f"{float(w):g}"


def lora_tag_text(stem: str, weight: float) -> str:
    return f"<lora:{stem}:{format_weight(weight)}>"


# ---- 2. the default prompt ---------------------------------------------------------------------


def escape_tag(tag: str) -> str:
    """Booru tags as WebUI prompt text: brackets escaped so `name (series)` is not emphasis."""
    return re.sub(r"([()\[\]])", r"\\\1", tag)


def dataset_prompt_tags(dataset_dir: str | Path, keep_tokens: int = 1) -> tuple[list[str], list[str]]:
    """(activation tags, common tags) of a dataset's captions.

    The activation tags are the first `keep_tokens` tags most captions start with (the tag editor
    puts them first, and `keep_tokens` keeps them there in training). The common tags are the most
    frequent others, each in at least MIN_TAG_SHARE of the images, at most MAX_COMMON_TAGS.
    """
    from ..dataset.tag_editor import load_captions
    from ..dataset.tags import tag_counts

    dataset_dir = Path(dataset_dir)
    captions = [c.tags for c in load_captions(dataset_dir)] if dataset_dir.is_dir() else []
    captions = [tags for tags in captions if tags]
    if not captions:
        return [], []
    activation: list[str] = []
    if keep_tokens > 0:
        heads = collections.Counter(tuple(tags[:keep_tokens]) for tags in captions)
        activation = list(heads.most_common(1)[0][0])
    counts = tag_counts(captions)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    common = [t for t, n in ranked if t not in activation and n >= MIN_TAG_SHARE * len(captions)]
    return activation, common[:MAX_COMMON_TAGS]


def default_prompt(dataset_dir: str | Path | None, keep_tokens: int = 1) -> str:
    """The activation tags and the dataset's most common tags, as a WebUI prompt (no LoRA tag)."""
    if dataset_dir is None:
        return ""
    activation, common = dataset_prompt_tags(dataset_dir, keep_tokens)
    return ", ".join(escape_tag(t) for t in activation + common)


def prompt_template(prompt: str, run_stems: Sequence[str], first_tag: str) -> str:
    """The prompt with this run's LoRA tag as `first_tag`: a tag of the run already in the prompt
    (any epoch, any weight) is replaced in place; otherwise the tag is appended."""
    _, tags, _ = parse_lora_tags(prompt)
    ours = [t for t in tags if t.name in run_stems]
    if len(ours) > 1:
        raise StudioError(
            f"The prompt holds {len(ours)} tags of this run ({', '.join(t.text for t in ours)}).",
            "Keep one: the grid sets its epoch and weight.",
        )
    if ours:
        return prompt.replace(ours[0].text, first_tag, 1)
    base = prompt.rstrip().rstrip(",").rstrip()
    return f"{base}, {first_tag}" if base else first_tag


# ---- 3. the plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridSettings:
    """What a user chooses; None = the default (from the model's architecture or the dataset)."""

    epochs: str | tuple[int | str, ...] = "all"  # "all", "every:K", "1,3,5" or (1, 3, "final")
    weights: tuple[float, ...] = DEFAULT_WEIGHTS
    prompt: str | None = None  # None: activation + common tags; `<lora:...>` of the run is inserted
    negative_prompt: str = ""
    seeds: tuple[int, ...] = DEFAULT_SEEDS  # several seeds: one row per (epoch, seed)
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    sampler_name: str | None = None
    scheduler: str | None = None
    no_lora_column: bool = False  # a first column with the LoRA tag removed from the prompt
    swap_axes: bool = False  # False: rows = epochs, columns = weights


@dataclass(frozen=True)
class Cell:
    """One image of the grid."""

    row: int
    col: int
    epoch: EpochFile | None  # None only in the no-LoRA line
    weight: float | None  # None = no LoRA
    seed: int
    request: GenerationRequest


@dataclass
class GridPlan:
    lora_dir: Path
    stem: str
    epochs: list[EpochFile]
    weights: list[float]
    seeds: list[int]
    base: GenerationRequest  # prompt = the template (first epoch, first weight); seed = seeds[0]
    no_lora_column: bool
    swap_axes: bool
    epoch_values: list[str]  # the epoch axis as Prompt S/R values (the first is the search string)
    weight_values: list[str]  # the weight axis as Prompt S/R values
    epoch_first: bool = False  # the epoch axis is X (applied first): swap_axes
    notes: list[str] = field(default_factory=list)

    # -- layout

    @property
    def first_tag(self) -> str:
        return lora_tag_text(self.epochs[0].stem, self.weights[0])

    def epoch_line(self) -> list[tuple[EpochFile, int]]:
        return [(e, s) for e in self.epochs for s in self.seeds]

    def weight_line(self) -> list[float | None]:
        return ([None] if self.no_lora_column else []) + list(self.weights)

    def epoch_labels(self) -> list[str]:
        many = len(self.seeds) > 1
        return [f"{e.label}\nseed {s}" if many else e.label for e, s in self.epoch_line()]

    def weight_labels(self) -> list[str]:
        return [NO_LORA_LABEL if w is None else format_weight(w) for w in self.weight_line()]

    def row_labels(self) -> list[str]:
        return self.weight_labels() if self.swap_axes else self.epoch_labels()

    def col_labels(self) -> list[str]:
        return self.epoch_labels() if self.swap_axes else self.weight_labels()

    # -- cells

    def cell_prompts(self, epoch_index: int, weight: float | None) -> tuple[str, str]:
        """The prompts of one cell, by the WebUI's Prompt S/R (X axis first)."""
        template, negative = self.base.prompt, self.base.negative_prompt
        if weight is None:  # the tag removed, and nothing else: the text the model sees is the same
            return template.replace(self.first_tag, ""), negative
        w_index = self.weights.index(weight)
        epoch_axis = (self.epoch_values, self.epoch_values[epoch_index])
        weight_axis = (self.weight_values, self.weight_values[w_index])
        axes = [epoch_axis, weight_axis] if self.epoch_first else [weight_axis, epoch_axis]
        return xyz.apply_axes(template, negative, axes)

    def cells(self) -> list[Cell]:
        """Every cell, row by row."""
        out = []
        epoch_line, weight_line = self.epoch_line(), self.weight_line()
        for ei, (epoch, seed) in enumerate(epoch_line):
            for wi, weight in enumerate(weight_line):
                prompt, negative = self.cell_prompts(self.epochs.index(epoch), weight)
                request = self.base.replace(prompt=prompt, negative_prompt=negative, seed=seed, batch_size=1)
                row, col = (wi, ei) if self.swap_axes else (ei, wi)
                out.append(Cell(row, col, epoch if weight is not None else None, weight, seed, request))
        out.sort(key=lambda c: (c.row, c.col))
        return out

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return len(self.row_labels()), len(self.col_labels())

    # -- the X/Y/Z plot equivalent

    def xyz_axes(self) -> list[tuple[str, list[str]]]:
        """(type, values) for X, Y and, with several seeds, Z, as the WebUI's X/Y/Z plot takes them.

        The no-LoRA line is exported as weight 0 (the same image: a LoRA at 0 adds nothing), placed
        last because the first value of a Prompt S/R axis must be the search string.
        """
        weights = list(self.weight_values)
        if self.no_lora_column:
            zero = _weight_value_forms(self.epochs[0].stem)[self._weight_form](0.0)
            if zero not in weights:
                weights.append(zero)
        epoch_axis, weight_axis = (xyz.SR_TYPE, list(self.epoch_values)), (xyz.SR_TYPE, weights)
        axes = [epoch_axis, weight_axis] if self.swap_axes else [weight_axis, epoch_axis]
        if len(self.seeds) > 1:
            axes.append((xyz.SEED_TYPE, [str(s) for s in self.seeds]))
        return axes

    @property
    def _weight_form(self) -> int:
        forms = _weight_value_forms(self.epochs[0].stem)
        return next(i for i, f in enumerate(forms) if f(self.weights[0]) == self.weight_values[0])

    def xyz_script_text(self) -> str:
        """The X/Y/Z plot settings as text a user can copy into txt2img's Script section."""
        lines = [
            "Script: X/Y/Z plot",
            f"Prompt: {self.base.prompt}",
        ]
        if self.base.negative_prompt:
            lines.append(f"Negative prompt: {self.base.negative_prompt}")
        for letter, (kind, values) in zip("XYZ", self.xyz_axes()):
            lines.append(f"{letter} type: {kind}")
            lines.append(f"{letter} values: {xyz.format_axis_values(values)}")
        b = self.base
        lines.append(
            f"Seed: {self.seeds[0]}, Steps: {b.steps}, Sampler: {b.sampler_name}, Schedule type: {b.scheduler}, "
            f"CFG scale: {b.cfg_scale:g}, Size: {b.width}x{b.height}"
        )
        if self.no_lora_column:
            lines.append("(weight 0 stands for the grid's no-LoRA column: it renders the same image)")
        return "\n".join(lines) + "\n"

    # -- JSON

    def to_json(self) -> dict:
        return {
            "version": PLAN_VERSION,
            "lora_dir": str(self.lora_dir),
            "stem": self.stem,
            "epochs": [{"stem": e.stem, "epoch": e.epoch, "file": e.path.name} for e in self.epochs],
            "weights": list(self.weights),
            "seeds": list(self.seeds),
            "generation": dataclasses.asdict(self.base),
            "no_lora_column": self.no_lora_column,
            "swap_axes": self.swap_axes,
            "epoch_values": list(self.epoch_values),
            "weight_values": list(self.weight_values),
            "epoch_first": self.epoch_first,
            "rows": self.row_labels(),
            "cols": self.col_labels(),
            "xyz": [{"type": t, "values": xyz.format_axis_values(v)} for t, v in self.xyz_axes()],
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: dict) -> GridPlan:
        if data.get("version") != PLAN_VERSION:
            raise StudioError(f"Grid plan version {data.get('version')!r} is not {PLAN_VERSION}.", "Make the plan again.")
        lora_dir = Path(data["lora_dir"])
        return cls(
            lora_dir=lora_dir,
            stem=data["stem"],
            epochs=[EpochFile(e["stem"], e["epoch"], lora_dir / e["file"]) for e in data["epochs"]],
            weights=[float(w) for w in data["weights"]],
            seeds=[int(s) for s in data["seeds"]],
            base=GenerationRequest(**data["generation"]),
            no_lora_column=bool(data["no_lora_column"]),
            swap_axes=bool(data["swap_axes"]),
            epoch_values=list(data["epoch_values"]),
            weight_values=list(data["weight_values"]),
            epoch_first=bool(data["epoch_first"]),
            notes=list(data.get("notes", [])),
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"


def _epoch_value_forms() -> list[Callable[[str], str]]:
    return [lambda stem: stem, lambda stem: f"<lora:{stem}:"]


def _weight_value_forms(first_stem: str) -> list[Callable[[float], str]]:
    # The second form only works when the weight axis is applied first (the epoch name unchanged yet).
    return [lambda w: f":{format_weight(w)}>", lambda w: f"{first_stem}:{format_weight(w)}>"]


def _choose_search_strings(plan: GridPlan, template: str, negative: str) -> None:
    """Pick the shortest S/R values that give every cell exactly its intended prompt."""
    head, tail = template.split(plan.first_tag, 1)
    for ef in _epoch_value_forms():
        for wf in _weight_value_forms(plan.epochs[0].stem):
            plan.epoch_values = [ef(e.stem) for e in plan.epochs]
            plan.weight_values = [wf(w) for w in plan.weights]
            try:
                exact = all(
                    plan.cell_prompts(ei, w) == (head + lora_tag_text(e.stem, w) + tail, negative)
                    for ei, e in enumerate(plan.epochs)
                    for w in plan.weights
                )
            except StudioError:  # a search string not found after the other axis ran
                exact = False
            if exact:
                return
    raise StudioError(
        f"No Prompt S/R search strings change only this run's LoRA tag in {template!r}"
        + (f" / negative {negative!r}" if negative else "") + ".",
        "The prompt or negative prompt repeats the LoRA's name or weight elsewhere: remove that, or change the first weight.",
    )


def make_plan(
    lora_dir: str | Path,
    settings: GridSettings,
    defaults: GenerationRequest,
    stem: str | None = None,
    dataset_dir: str | Path | None = None,
    keep_tokens: int = 1,
) -> GridPlan:
    """Resolve a user's choices into a plan.

    lora_dir: the folder of the run's files. defaults: the host's `default_generation(arch)`.
    stem: the run's file stem (None: the folder's only run). dataset_dir: captions for the
    default prompt. keep_tokens: how many leading caption tags are activation tags.
    """
    lora_dir = Path(lora_dir)
    files = find_epoch_files(lora_dir, stem)
    if stem is None:  # the final file's stem is the run's; an epoch file's is it plus -NN
        stem = files[-1].stem if files[-1].epoch is None else split_epoch_stem(files[0].stem)[0]
    epochs = select_epochs(files, settings.epochs)
    weights = parse_weights(list(settings.weights))
    seeds = [int(s) for s in settings.seeds] or list(DEFAULT_SEEDS)
    if len(set(seeds)) != len(seeds):
        raise StudioError(f"Seeds {seeds} repeat a seed.", "List each seed once.")

    notes = []
    prompt = settings.prompt
    if prompt is None:
        prompt = default_prompt(dataset_dir, keep_tokens)
        notes.append("prompt: the dataset's activation and most common tags" if prompt else "prompt: no captions found, so only the LoRA tag")
    first_tag = lora_tag_text(epochs[0].stem, weights[0])
    template = prompt_template(prompt, [f.stem for f in files], first_tag)
    negative = settings.negative_prompt
    if template.count(first_tag) != 1 or first_tag in negative:
        raise StudioError(f"The prompt repeats {first_tag}.", "Write the run's LoRA tag once, in the prompt only.")

    def pick(value, default):
        return default if value is None else value

    base = defaults.replace(
        prompt=template,
        negative_prompt=negative,
        seed=seeds[0],
        steps=pick(settings.steps, defaults.steps),
        cfg_scale=pick(settings.cfg_scale, defaults.cfg_scale),
        width=pick(settings.width, defaults.width),
        height=pick(settings.height, defaults.height),
        sampler_name=pick(settings.sampler_name, defaults.sampler_name),
        scheduler=pick(settings.scheduler, defaults.scheduler),
        batch_size=1,
    )
    plan = GridPlan(
        lora_dir=lora_dir, stem=stem, epochs=epochs, weights=weights, seeds=seeds, base=base,
        no_lora_column=settings.no_lora_column, swap_axes=settings.swap_axes,
        epoch_values=[], weight_values=[], epoch_first=settings.swap_axes, notes=notes,
    )
    _choose_search_strings(plan, template, negative)
    return plan


def compare_after_training(
    project_dir: str | Path,
    lora_dir: str | Path,
    stem: str,
    defaults: GenerationRequest,
    epochs: Sequence[int] | None = None,
    settings: GridSettings | None = None,
) -> GridPlan:
    """The default grid of a training run: its saved epochs (all, or `epochs`) x the default
    weights, prompted with the dataset's activation and common tags (the trainer and UI call this).

    `keep_tokens` comes from project.toml's [train] section when set there (else 1).
    """
    from ..project import load_project_file

    project_dir = Path(project_dir)
    train = load_project_file(project_dir / "project.toml").section("train")
    keep = train.get("keep_tokens", 1)
    keep_tokens = keep if isinstance(keep, int) and keep >= 0 else 1
    settings = settings or GridSettings()
    if epochs is not None:
        settings = dataclasses.replace(settings, epochs=tuple(int(e) for e in epochs))
    return make_plan(lora_dir, settings, defaults, stem=stem, dataset_dir=project_dir / "dataset", keep_tokens=keep_tokens)
