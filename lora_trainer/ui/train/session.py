"""The Train sub-tab's work, apart from gradio: load/save settings, check them against the dataset,
pick the host, start/stop/resume the training job, and find the run a page shows.

Every function takes the StudioContext and plain values and raises StudioError for what a user can
fix; the callbacks in __init__.py turn those into sentences.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import StudioError
from ...jobs import Job
from ...project import Project, open_project
from ...train.config import TrainConfig, load_train_config, validate
from ..context import StudioContext
from .form import problem_sentence, repeats_advice, suggest_repeats

RUNS_KEY = "train.runs"  # ctx.extra: {job id: TrainRun} of the training jobs this server started


@dataclass(frozen=True)
class TrainRun:
    """What the tab needs to show a run's files: its project, output folder and file prefix."""

    project: str
    output_dir: Path
    stem: str
    samples_dir: Path


def project_of(ctx: StudioContext, name: str | None) -> Project:
    if not name:
        raise StudioError("No project is chosen.", "Pick or create a project at the top of the tab.")
    return open_project(ctx.root, name)


# ---- settings in project.toml ------------------------------------------------------------------


def host_arch(ctx: StudioContext) -> str | None:
    """The family of the model the WebUI has loaded, or None standalone."""
    if ctx.host is None:
        return None
    try:
        return ctx.host.model_arch()
    except StudioError:
        return None


def saved_config(ctx: StudioContext, project: Project) -> tuple[TrainConfig, bool]:
    """(the project's [train] settings, whether there were any). Without a section: the guide's
    defaults for the loaded model's family (inside the WebUI) or SD1.5."""
    section = project.load_file().section("train")
    return load_train_config(section, host_arch(ctx) or "sd15"), bool(section)


def base_config(ctx: StudioContext, project: Project, arch: str) -> TrainConfig:
    """What the form's values are applied to: the saved settings (for the fields the form does not
    show), or the family's defaults when the saved section can not be read."""
    try:
        return saved_config(ctx, project)[0]
    except StudioError:
        return TrainConfig.defaults_for(arch if arch in ("sd15", "sdxl") else "sd15")


def save_config(project: Project, config: TrainConfig) -> bool:
    """Replace the [train] section of project.toml (other sections are kept as they are).

    A [train] section that can not be read is replaced too, after a copy of the file went to the
    project's trash; returns True when that happened."""
    from ...trash import keep_copies

    pf = project.load_file()
    try:
        load_train_config(pf.section("train"))
        broken = False
    except StudioError:
        keep_copies(project.dir, [project.toml_path], "the Train tab replaced a [train] section it could not read")
        broken = True
    pf.set_section("train", config.to_toml_dict())
    project.save_file(pf)
    return broken


# ---- what the dataset says ---------------------------------------------------------------------


@dataclass
class Check:
    """The step preview and the problems of a config on its dataset."""

    preview: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    train_images: int = 0
    activation_tag: str = ""
    epochs: int = 0  # of the planned run (0 without a dataset)

    @property
    def ok(self) -> bool:
        return not self.errors


def first_tags(dataset) -> tuple[str, int, int]:
    """(the most common first tag of the captioned training images, how many start with it, how many captioned)."""
    counts: collections.Counter = collections.Counter()
    captioned = 0
    for item in dataset.items:
        if item.is_regularization:
            continue
        first = item.caption.split(",")[0].strip()
        if first:
            counts[first] += 1
            captioned += 1
    if not counts:
        return "", 0, 0
    tag, n = counts.most_common(1)[0]
    return tag, n, captioned


def resolve_paths(ctx: StudioContext, project: Project, config: TrainConfig) -> TrainConfig:
    """The config with every path it names made absolute and confined to the allowed folders
    (TrainConfig.with_paths: a relative path is inside the project folder, as the dataset folders
    and the checkpoint are, so `demo-model.safetensors` is the project's own model)."""
    return config.with_paths(project.dir, ctx.paths.confine)


def model_problem(ctx: StudioContext, config: TrainConfig) -> str:
    """A sentence when the model's family is not the settings' (checked from the file header only)."""
    if ctx.host is not None:
        arch = host_arch(ctx)
        where = "The WebUI has"
    elif config.checkpoint.endswith(".safetensors") and Path(config.checkpoint).is_file():
        from ...models.checkpoint import describe

        try:
            arch = describe(config.checkpoint)["arch"]
        except StudioError as e:
            return str(e)
        where = f"{Path(config.checkpoint).name} is"
    else:
        return ""
    if arch and arch != config.arch:
        names = {"sd15": "SD1.5", "sdxl": "SDXL"}
        loaded = "" if ctx.host is None else " loaded"
        return (f"{where} an {names.get(arch, arch)} model{loaded}, but the settings are for {names.get(config.arch, config.arch)}. "
                f"Set Model family to {arch} (its defaults fill in).")
    return ""


def check(ctx: StudioContext, project: Project, config: TrainConfig) -> Check:
    """Resolve the paths, scan the dataset, validate, and write the guide's step preview."""
    from ...train.data import load_dataset, plan_summary

    out = Check()
    dataset = None
    try:
        resolved = resolve_paths(ctx, project, config)
    except StudioError as e:  # nothing is read from a path that is not allowed
        out.errors.append(str(e))
        resolved = None
    if ctx.host is None and not (resolved or config).checkpoint:
        out.errors.append("Model file is empty: there is no model to train on. Type the path of an SD1.5 or SDXL "
                          ".safetensors checkpoint.")
    if resolved is not None:
        try:
            dataset = load_dataset(resolved, project.dir)
        except StudioError as e:
            out.errors.append(str(e))
    resolved = resolved or config.replace(checkpoint="", vae="", network_weights="", output_dir="")
    problems = validate(resolved, dataset.summary if dataset is not None else None)
    for p in problems:
        (out.errors if p.is_error else out.warnings).append(problem_sentence(p.field, p.value, p.message, p.fix))
    wrong_model = model_problem(ctx, resolved)
    if wrong_model:
        out.errors.append(wrong_model)
    if dataset is None:
        return out
    out.train_images = dataset.summary.train_images
    if out.train_images == 0:
        out.preview.append(f"No training images in {project.dataset_dir} yet: add some in the Dataset tab.")
        return out
    tag, n, captioned = first_tags(dataset)
    out.activation_tag = tag
    if tag:
        out.preview.append(f"Activation tag: {tag} (first tag of {n} of {captioned} captions); "
                           f"{config.keep_tokens} activation tag(s) kept first.")
    try:
        planned = resolved.replace(train_batch_size=max(1, resolved.train_batch_size))
        out.epochs = dataset.plan(planned).epochs
        out.preview += plan_summary(planned, dataset).splitlines()
    except ValueError as e:  # an unknown unit: validate already said so in the form's words
        out.preview.append(f"No step preview: {e}.")
    if config.datasets and config.datasets[0].repeats != suggest_repeats(config.arch, dataset.summary.folders[0].images):
        out.preview.append(repeats_advice(config.arch, dataset.summary.folders[0].images))
    return out


def _scan(project: Project, config: TrainConfig):
    """The dataset as the config reads it, or None when its folders can not be read."""
    from ...train.data import load_dataset

    try:
        return load_dataset(config, project.dir)
    except StudioError:
        return None


def with_suggested_repeats(project: Project, config: TrainConfig, dataset=None) -> TrainConfig:
    """The first folder's repeats set to the guide's suggestion for its image count."""
    dataset = dataset or _scan(project, config)
    images = dataset.summary.folders[0].images if dataset is not None and dataset.summary.folders else 0
    if not images:
        return config
    folders = list(config.datasets)
    folders[0] = dataclasses.replace(folders[0], repeats=suggest_repeats(config.arch, images))
    return config.replace(datasets=folders)


def fresh_config(project: Project, config: TrainConfig) -> TrainConfig:
    """A project without saved settings: the guide's repeats for its image count, and the
    dataset's activation tag as the first sample prompt."""
    dataset = _scan(project, config)
    if dataset is None:
        return config
    config = with_suggested_repeats(project, config, dataset)
    tag = first_tags(dataset)[0]
    return config.replace(sample_prompts=[tag]) if tag and not config.sample_prompts else config


# ---- the host ------------------------------------------------------------------------------------


def host_for(ctx: StudioContext, config: TrainConfig, lora_dir: Path):
    """The WebUI's host, or a StandaloneHost over the config's (resolved) checkpoint.

    The standalone host is kept in ctx.extra, so the model loads once and later runs (and Resume)
    reuse it. One is kept at a time: another checkpoint or project replaces it and frees the old
    model (a run still using it keeps its own reference until it ends)."""
    if ctx.host is not None:
        return ctx.host
    if not config.checkpoint:
        raise StudioError("Model file is empty: there is no model to train on.",
                          "Type the path of an SD1.5 or SDXL .safetensors checkpoint in Setup.")
    return ctx.standalone_host(config.checkpoint, lora_dir, config.clip_skip if config.arch == "sd15" else 1)


def run_files(ctx: StudioContext, project: Project, config: TrainConfig) -> TrainRun:
    """Where a run of `config` writes (the host decides the default output folder)."""
    from ...train.run import SAMPLES_DIR, file_stem, output_dir_for

    return TrainRun(project.name, output_dir_for(project, config, ctx.host), file_stem(project, config),
                    project.output_dir / SAMPLES_DIR)


# ---- jobs ----------------------------------------------------------------------------------------


def runs(ctx: StudioContext) -> dict[str, TrainRun]:
    return ctx.extra.setdefault(RUNS_KEY, {})


def job_of(ctx: StudioContext, job_id: str, name: str | None) -> Job | None:
    """The training job a page shows for project `name`: the one it started if it is this project's,
    else this project's running one, else its newest (a reloaded page re-attaches to it)."""
    known = runs(ctx)
    if job_id and job_id in known and known[job_id].project == name:
        return ctx.jobs.get(job_id)
    active = ctx.jobs.active("train")
    if active is not None and active.id in known and known[active.id].project == name:
        return active
    return next((j for j in ctx.jobs.jobs("train") if j.id in known and known[j.id].project == name), None)


def start(ctx: StudioContext, project: Project, config: TrainConfig, resume: bool = False) -> Job:
    """Submit the training job; the config is saved to project.toml first (as typed)."""
    from ...train.run import train_job
    from ...train.state import STATE_DIR, saved_states

    running = job_of(ctx, "", project.name)
    if running is not None and not running.status.finished:
        raise StudioError(f"A training of {project.name} is already {running.status.value}.",
                          "Wait for it to finish, or press Stop.")
    result = check(ctx, project, config)
    if not result.ok:
        raise StudioError("The settings have problems:\n" + "\n".join(result.errors), "Fix them and press Start again.")
    resolved = resolve_paths(ctx, project, config)
    files = run_files(ctx, project, resolved)
    if resume:
        states = saved_states(project.dir, files.stem)
        if not states:
            raise StudioError(f"There is no stopped run of {files.stem} to resume (no saved state in {project.dir / STATE_DIR}).",
                              "Press Start for a new run.")
        if max(states) >= result.epochs:
            raise StudioError(f"The last run of {files.stem} already finished all {max(states)} epochs.",
                              "Raise Epochs to train further, or press Start for a new run.")
    host = host_for(ctx, resolved, files.output_dir)
    save_config(project, config)

    def work(progress, cancel):
        result = train_job(project, resolved, host, progress, cancel, resume=resume)
        _auto_compare(ctx, project, progress)
        return result

    title = f"{'Resuming' if resume else 'Training'} {project.name}"
    # Inside the WebUI the host wraps the job: its queue lock, progress bar and Interrupt button.
    job = ctx.submit("train", title, work, gpu=True, config=resolved, project=project)
    runs(ctx)[job.id] = files
    return job


def _auto_compare(ctx: StudioContext, project: Project, progress) -> None:
    """Queue the epochs x weights grid when the project asks for it ([compare] auto_after_training).

    The grid is a job of its own (it waits for the GPU behind this one); a grid that cannot be
    planned is a log line, never a failed training.
    """
    from ...progress import ProgressEvent
    from ..compare.runs import auto_compare_enabled, start_compare_for_project

    if not auto_compare_enabled(project):
        return
    try:
        start_compare_for_project(ctx, project.name)
        progress(ProgressEvent(log="queued the comparison grid of the saved epochs (Compare tab)"))
    except StudioError as e:
        progress(ProgressEvent(log=f"no comparison grid: {e}"))


def stop(ctx: StudioContext, job_id: str, name: str | None) -> str:
    job = job_of(ctx, job_id, name)
    if job is None or job.status.finished:
        return "No training of this project is running."
    ctx.jobs.cancel(job.id)
    return "Stopping after the current step; finished epochs are kept, and Resume continues from the last one."
