"""What the tab needs to know about where it runs: the studio root, the jobs, the host."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..jobs import JobManager
from ..paths import PathPolicy, path_policy
from ..project import LOGS_DIR
from ..settings import StudioSettings, load_settings

# One job manager per studio root for the life of the server process. The WebUI rebuilds the tab
# on "Reload UI" (re-running our script); keeping the manager here, in a module cached in
# sys.modules, is what lets a rebuilt or reloaded page re-attach to a training that is still running.
_MANAGERS: dict[Path, JobManager] = {}


def job_manager_for(root: Path) -> JobManager:
    root = Path(root).absolute()
    if root not in _MANAGERS:
        _MANAGERS[root] = JobManager(log_dir=root / LOGS_DIR / "jobs")
    return _MANAGERS[root]


STANDALONE_HOST_KEY = "standalone_host"  # extra: ((checkpoint, lora folder, clip skip), StandaloneHost)
# extra, inside the WebUI: a function that adds the WebUI's own "Send to txt2img" button, pasting
# the parameters text of the given component (host/webui_compat.py add_send_to_txt2img)
SEND_TO_TXT2IMG_KEY = "send_to_txt2img"


@dataclass
class StudioContext:
    root: Path  # the studio root: projects live here
    jobs: JobManager
    settings: StudioSettings
    paths: PathPolicy  # every path typed into the UI goes through paths.confine(...)
    mode: str = "standalone"  # "standalone" or "webui"
    host: Any = None  # the Host (standalone or WebUI) for training and generation
    remote: bool = False  # served beyond loopback (--listen/--share) without the opt-in flag
    extra: dict[str, Any] = field(default_factory=dict)

    def submit(self, kind: str, title: str, work, gpu: bool = False, config: Any = None, project: Any = None):
        """Start a job, the one way every face starts one. A GPU job runs through the host's job
        wrapper where it has one (the WebUI: its queue lock, its progress bar and Interrupt; a
        WebUI generation waits for it, and it for them); `config` and `project` tell the wrapper
        about a training."""
        wrap = getattr(self.host, "wrap_job", None) if gpu else None
        fn = wrap(title, work, config=config, project=project) if wrap is not None else work
        return self.jobs.submit(kind, title, fn, gpu=gpu)

    def standalone_host(self, checkpoint: str | Path, lora_dir: str | Path, clip_skip: int = 1):
        """The StandaloneHost over `checkpoint`, kept here so the model loads once for Train and Compare.

        One host is kept at a time, keyed by (checkpoint, LoRA folder, CLIP skip): a grid right after
        training reuses the trained model. Another key replaces it and frees the old model (a job
        still using it keeps its own reference until it ends).
        """
        from ..host.standalone import StandaloneHost

        key = (str(Path(checkpoint)), str(lora_dir), clip_skip)
        cached = self.extra.get(STANDALONE_HOST_KEY)
        if cached is not None and cached[0] == key:
            return cached[1]
        host = StandaloneHost(checkpoint, lora_dirs=[lora_dir], clip_skip=clip_skip)
        if cached is not None:
            cached[1].close()
        self.extra[STANDALONE_HOST_KEY] = (key, host)
        return host

    @classmethod
    def for_root(
        cls,
        root: str | Path,
        settings: StudioSettings | None = None,
        host_folders: tuple[Path, ...] = (),
        remote: bool = False,
        **kwargs: Any,
    ) -> StudioContext:
        """A context for `root`; standalone, the settings come from `<root>/studio-settings.toml`."""
        root = Path(root).absolute()
        root.mkdir(parents=True, exist_ok=True)
        settings = settings if settings is not None else load_settings(root)
        policy = path_policy(root, settings, host_folders, restricted=remote)
        return cls(root=root, jobs=job_manager_for(root), settings=settings, paths=policy, remote=remote, **kwargs)
