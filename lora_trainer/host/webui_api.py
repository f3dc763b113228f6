"""LoRA Studio's HTTP API on the WebUI's FastAPI app (`--api` / `--nowebui`), behind the WebUI's
own `--api-auth`, so the studio can run headless:

    POST /lora-studio/v1/train            {"project": "alice", "config": {"max_train_epochs": 4}, "resume": false}
    POST /lora-studio/v1/tag              {"project": "alice", "model": "wd-eva02-large-tagger-v3", ...}
    POST /lora-studio/v1/caption          {"project": "alice", "mode": "overwrite"}   (the WebUI's BLIP)
    POST /lora-studio/v1/grid             {"project": "alice", "weights": [0.6, 0.8, 1.0], ...}
    GET  /lora-studio/v1/jobs             every job of this server
    GET  /lora-studio/v1/jobs/{id}        one job: status, fraction, text, ETA, log tail, result
    POST /lora-studio/v1/jobs/{id}/cancel

Each start returns {"job": {...}} at once; the work runs as a job of the studio's JobManager, the
same queue the tab uses. A user error is HTTP 400 with {"error", "fix"}; an unknown job is 404.

The `start_*` functions are what the routes call and what a tab calls: plain functions of a
StudioContext. Nothing here imports `modules.*` except `on_app_started`'s reading of the flags.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StudioError

if TYPE_CHECKING:
    from ..jobs import Job
    from ..ui.context import StudioContext

PREFIX = "/lora-studio/v1"


# ---- the functions the routes (and a tab) call ------------------------------------------------


def job_json(job: Job) -> dict[str, Any]:
    result = job.result
    if result is not None and hasattr(result, "to_json"):
        result = result.to_json()
    elif result is not None and dataclasses.is_dataclass(result):
        result = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(result).items()
                  if isinstance(v, (str, int, float, bool, Path, type(None)))}
    elif result is not None and not isinstance(result, (str, int, float, bool, list, dict)):
        result = str(result)
    return {
        "id": job.id, "kind": job.kind, "title": job.title, "status": job.status.value,
        "fraction": job.fraction, "text": job.text, "eta_s": job.eta_s, "error": job.error,
        "summary": job.summary, "elapsed_s": round(job.elapsed_s, 3), "log": list(job.log_tail), "result": result,
    }


def start_training(ctx: StudioContext, project_name: str, overrides: dict[str, Any] | None = None,
                   resume: bool = False) -> Job:
    """Train `project_name` on the host's model with its project.toml [train] settings and `overrides`."""
    from ..project import open_project
    from ..train.config import TrainConfig
    from ..train.run import train_job

    if ctx.host is None:
        raise StudioError("No model host is set up, so there is no model to train on.", "Load a checkpoint in the WebUI.")
    project = open_project(ctx.root, project_name)
    section = project.load_file().section("train")
    section.update(overrides or {})
    if not section.get("arch") and not section.get("checkpoint"):
        section["arch"] = ctx.host.model_arch()  # the loaded model's family picks the defaults
    config = TrainConfig.from_toml_dict(section, f"[train] of {project.toml_path} with the request's config")
    config = config.with_paths(project.dir, ctx.paths.confine)  # the tab's confinement, for every path the body names
    title = f"Training {project.name}"
    host = ctx.host

    def work(progress, cancel):
        return train_job(project, config, host, progress, cancel, resume=resume)

    return ctx.submit("train", title, work, gpu=True, config=config, project=project)


def start_tagging(ctx: StudioContext, project_name: str, model: str, settings: dict[str, Any] | None = None,
                  mode: str = "overwrite") -> Job:
    """WD-tag a project's dataset (the Dataset tab's "Tag images")."""
    from ..dataset.tagger import KNOWN_TAGGERS, TagSettings, tag_dataset
    from ..project import open_project

    project = open_project(ctx.root, project_name)
    fields = {f.name for f in dataclasses.fields(TagSettings)}
    unknown = sorted(set(settings or {}) - fields)
    if unknown:
        raise StudioError(f"Unknown tagging settings: {', '.join(unknown)}.", f"Use: {', '.join(sorted(fields))}.")
    values = dict(settings or {})
    if "blacklist" in values:
        values["blacklist"] = tuple(values["blacklist"])
    tag_settings = TagSettings(**values)
    tag_settings.validate()
    source = model if model in KNOWN_TAGGERS else str(ctx.paths.confine(model))
    models_dir = ctx.root / "_models"
    title = f"Tagging {project.name}"

    def work(progress, cancel):
        return tag_dataset(project.dataset_dir, project.dir, [source], tag_settings, mode, models_dir,
                           progress=progress, cancel=cancel)

    return ctx.submit("tag", title, work, gpu=True)


def start_captioning(ctx: StudioContext, project_name: str, mode: str = "overwrite") -> Job:
    """Caption a project's dataset with the host's captioner (the WebUI's BLIP: ctx.extra["caption_fn"])."""
    from ..dataset.captioner import caption_dataset
    from ..project import open_project

    fn = ctx.extra.get("caption_fn")
    if fn is None:
        raise StudioError("This server has no built-in captioner.", "Use the Dataset tab's CoCa captioner instead.")
    project = open_project(ctx.root, project_name)
    title = f"Captioning {project.name}"

    def work(progress, cancel):
        return caption_dataset(project.dataset_dir, project.dir, fn, mode, progress=progress, cancel=cancel)

    return ctx.submit("caption", title, work, gpu=True)


def start_grid(ctx: StudioContext, project_name: str, settings: dict[str, Any] | None = None,
               stem: str | None = None, out: str | None = None) -> Job:
    """The epochs x weights grid of a project's run, rendered by the host (the Compare tab's grid)."""
    from ..compare.plan import GridSettings, compare_after_training
    from ..compare.render import new_grid_path, render_grid
    from ..project import open_project

    if ctx.host is None:
        raise StudioError("No model host is set up, so no images can be made.", "Load a checkpoint in the WebUI.")
    project = open_project(ctx.root, project_name)
    fields = {f.name for f in dataclasses.fields(GridSettings)}
    unknown = sorted(set(settings or {}) - fields)
    if unknown:
        raise StudioError(f"Unknown grid settings: {', '.join(unknown)}.", f"Use: {', '.join(sorted(fields))}.")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in (settings or {}).items()}
    grid_settings = GridSettings(**values)
    host = ctx.host
    lora_dir = host.lora_output_dir(project)
    name = stem or project.file_stem
    target = ctx.paths.confine(out) if out else None  # default: where the tab puts grids (new_grid_path)
    title = f"Grid of {name}"

    def work(progress, cancel):
        plan = compare_after_training(project.dir, lora_dir, name, host.default_generation(), settings=grid_settings)
        return render_grid(host, plan, target or new_grid_path(project), progress, cancel)

    return ctx.submit("grid", title, work, gpu=True)


def cancel_job(ctx: StudioContext, job_id: str) -> Job:
    job = ctx.jobs.cancel(job_id)
    if job is None:
        raise KeyError(job_id)
    return job


# ---- the routes -------------------------------------------------------------------------------


def parse_api_auth(text: str | None) -> dict[str, str]:
    """`--api-auth "u1:p1,u2:p2"` -> {user: password}, as modules/api/api.py reads it."""
    from ..logins import parse_credentials

    return dict(parse_credentials(text or "", "--api-auth"))


def register_routes(app, context: Callable[[], StudioContext], credentials: dict[str, str] | None = None) -> None:
    """Add the routes to a FastAPI `app`. `context()` gives the StudioContext (read per request, so
    a settings change applies); with `credentials` every route needs HTTP Basic auth."""
    from fastapi import Depends, HTTPException
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPBasic, HTTPBasicCredentials
    from pydantic import BaseModel

    # A typo'd field is an error, not silently ignored. pydantic 2 (Forge, gradio 4) reads
    # `model_config`; pydantic 1 (A1111) reads `class Config`. Ask the model class which it is:
    # pydantic 1.10 exports a `ConfigDict` too (and ignores it as a class attribute).
    if hasattr(BaseModel, "model_config"):
        class Strict(BaseModel):
            model_config = {"extra": "forbid"}
    else:
        class Strict(BaseModel):
            class Config:
                extra = "forbid"

    class TrainBody(Strict):
        project: str
        config: dict = {}  # noqa: RUF012 (pydantic copies field defaults)
        resume: bool = False

    class TagBody(Strict):
        project: str
        model: str
        settings: dict = {}  # noqa: RUF012 (pydantic copies field defaults)
        mode: str = "overwrite"

    class CaptionBody(Strict):
        project: str
        mode: str = "overwrite"

    class GridBody(Strict):
        project: str
        settings: dict = {}  # noqa: RUF012 (pydantic copies field defaults)
        stem: str | None = None
        out: str | None = None

    dependencies = []
    if credentials:
        basic = HTTPBasic()

        def auth(given: HTTPBasicCredentials = Depends(basic)) -> bool:  # noqa: B008 (FastAPI dependency)
            password = credentials.get(given.username)
            if password is not None and secrets.compare_digest(given.password, password):
                return True
            raise HTTPException(status_code=401, detail="Incorrect username or password", headers={"WWW-Authenticate": "Basic"})

        auth.__annotations__ = {"given": HTTPBasicCredentials, "return": bool}  # resolved, as below
        dependencies = [Depends(auth)]

    def answer(fn, *args, **kwargs):
        try:
            return {"job": job_json(fn(context(), *args, **kwargs))}
        except StudioError as e:
            return JSONResponse(status_code=400, content={"error": e.message, "fix": e.fix})

    def train(body: TrainBody):
        return answer(start_training, body.project, body.config, body.resume)

    def tag(body: TagBody):
        return answer(start_tagging, body.project, body.model, body.settings, body.mode)

    def caption(body: CaptionBody):
        return answer(start_captioning, body.project, body.mode)

    def grid(body: GridBody):
        return answer(start_grid, body.project, body.settings, body.stem, body.out)

    def jobs():
        return {"jobs": [job_json(j) for j in context().jobs.jobs()]}

    def job(job_id: str):
        found = context().jobs.get(job_id)
        if found is None:
            raise HTTPException(status_code=404, detail=f"No job {job_id!r}.")
        return {"job": job_json(found)}

    def cancel(job_id: str):
        try:
            return {"job": job_json(cancel_job(context(), job_id))}
        except KeyError:
            raise HTTPException(status_code=404, detail=f"No job {job_id!r}.") from None

    # This module has `from __future__ import annotations`: FastAPI reads annotations to tell a
    # JSON body from query parameters, and can not resolve these local classes from strings
    # (FastAPI 0.94, A1111's, evaluates them in the module's globals and raises NameError).
    for endpoint, body in ((train, TrainBody), (tag, TagBody), (caption, CaptionBody), (grid, GridBody)):
        endpoint.__annotations__ = {"body": body}
    for endpoint in (job, cancel):
        endpoint.__annotations__ = {"job_id": str}

    for path, endpoint, methods in (
        ("/train", train, ["POST"]), ("/tag", tag, ["POST"]), ("/caption", caption, ["POST"]),
        ("/grid", grid, ["POST"]), ("/jobs", jobs, ["GET"]), ("/jobs/{job_id}", job, ["GET"]),
        ("/jobs/{job_id}/cancel", cancel, ["POST"]),
    ):
        app.add_api_route(PREFIX + path, endpoint, methods=methods, dependencies=dependencies)


def on_app_started(context: Callable[[], StudioContext]):
    """A `script_callbacks.on_app_started` callback: adds the routes when the WebUI serves its API
    (`--api` or `--nowebui`), with `--api-auth` applied as the WebUI applies it to its own."""

    def started(demo, app) -> None:
        from modules import shared

        opts = shared.cmd_opts
        if not (getattr(opts, "api", False) or getattr(opts, "nowebui", False)):
            return
        try:
            credentials = parse_api_auth(getattr(opts, "api_auth", None))
        except StudioError as e:  # the WebUI's own API refuses such a flag too; ours stays closed
            print(f"LoRA Studio: the API routes are not added: {e}", flush=True)
            return
        register_routes(app, context, credentials or None)

    return started
