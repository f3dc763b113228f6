"""The steps both WebUI drivers share (webui_a1111_driver.py, webui_forge_driver.py): imported by
them inside the WebUI's own Python, from this folder (a script's folder is on its sys.path).

Each step is a function of a `Run` (the studio root, the WebUI folder, what earlier steps left)
returning a dict of facts for the report; `report` prints one JSON line per step, which
`run_driver` (in the test) reads back.
"""

import hashlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field

MARKER = "LORA_STUDIO_STEP "
# Steps whose failure does not stop the run: later steps do not need what they make.
INDEPENDENT = ("install_plan", "tab", "lora_applies", "grid")
PROJECT = "alice"


@dataclass
class Run:
    studio_root: str
    webui: str
    state: dict = field(default_factory=dict)  # host, before (sha256), result (the training's)
    reports: list = field(default_factory=list)

    def report(self, step, ok, **info):
        line = {"step": step, "ok": ok, **info}
        self.reports.append(line)
        # one write, on a line of its own: the WebUI's progress bars (other threads) share stdout
        sys.stdout.write("\n" + MARKER + json.dumps(line, default=str) + "\n")
        sys.stdout.flush()

    def step(self, name, fn):
        t = time.time()
        try:
            info = fn(self) or {}
            self.report(name, True, seconds=round(time.time() - t, 1), **info)
            return True
        except BaseException as e:  # noqa: BLE001 (report every failure, then stop)
            self.report(name, False, seconds=round(time.time() - t, 1), error=f"{type(e).__name__}: {e}",
                        trace=traceback.format_exc()[-3000:])
            return False

    def steps(self, named):
        """Run (name, fn) pairs in order; stop at a failed step later ones need. Exits the process."""
        for name, fn in named:
            if not self.step(name, fn) and name not in INDEPENDENT:
                break
        os._exit(0 if all(s["ok"] for s in self.reports) else 1)


def sha(image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


def request(prompt):
    from lora_trainer.host.base import GenerationRequest

    return GenerationRequest(prompt, seed=7, steps=2, width=64, height=64, sampler_name="Euler", scheduler="Automatic")


# ---- the steps ------------------------------------------------------------------------------------


def install_plan(run):
    """install.py in the WebUI's own venv: it would install only what the WebUI lacks (the ONNX
    runtime for the tagger), never anything the WebUI provides or pins."""
    import importlib.util

    import launch

    path = os.path.join(run.webui, "extensions", "lora-studio", "install.py")
    spec = importlib.util.spec_from_file_location("lora_studio_install", path)
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    candidates = {*install.REQUIRED, *install.PROTECTED, install.ONNX_CPU, install.ONNX_GPU, "tomli"}
    installed = sorted(n for n in candidates if launch.is_installed(n))
    plan = install.plan_installs(set(installed), cuda_available=False)
    assert set(plan) <= {install.ONNX_CPU}, plan
    return {"installed": installed, "would_install": plan}


def tab(run):
    """The tab builds, and Compare's "Send to txt2img" is the WebUI's own paste button, bound to
    the clicked cell's parameters."""
    from modules import infotext_utils, script_callbacks

    script_callbacks.ui_settings_callback()
    titles = [t[1] for t in script_callbacks.ui_tabs_callback()]
    assert "LoRA Studio" in titles, titles
    bound = [b.tabname for b in infotext_utils.registered_param_bindings
             if getattr(b.source_text_component, "elem_id", None) == "lora_studio_compare_cell_params"]
    assert bound == ["txt2img"], bound
    return {"tabs": titles, "send_to": bound}


def txt2img_before(run):
    image = run.state["host"].generate(request("a cat"))[0]
    run.state["before"] = sha(image)
    return {"sha256": run.state["before"], "size": image.size}


def train(run):
    """Two epochs of a LoRA on the loaded model, through the host's wrap_job (queue lock, the
    WebUI's progress state), as the tab's Start does."""
    from modules import call_queue, shared

    from lora_trainer.demo.dataset import make_demo_dataset
    from lora_trainer.progress import CancelToken
    from lora_trainer.project import create_project
    from lora_trainer.train.config import DatasetFolder, TrainConfig
    from lora_trainer.train.run import train_job

    project = create_project(run.studio_root, PROJECT)
    make_demo_dataset(project.dataset_dir, count=2, size=64)
    config = TrainConfig.sd15_defaults().replace(
        resolution=256, min_bucket_reso=256, bucket_no_upscale=True, optimizer="AdamW", optimizer_args={},
        mixed_precision="no", max_token_length=75, lr_scheduler="constant", lr_warmup_ratio=0.0, network_dim=4,
        network_alpha=4.0, max_train_epochs=2, train_batch_size=2, datasets=[DatasetFolder(repeats=2)])
    host = run.state["host"]
    seen = []

    def progress(event):
        if "step" in event.extra:
            seen.append({"step": event.extra["step"], "locked": call_queue.queue_lock._lock.locked(),
                         "job_count": shared.state.job_count, "textinfo": shared.state.textinfo})

    fn = host.wrap_job(f"Training {PROJECT}", lambda p, c: train_job(project, config, host, p, c), config=config, project=project)
    result = run.state["result"] = fn(progress, CancelToken())
    assert seen and all(s["locked"] for s in seen), seen
    return {"files": [str(p) for p in result.files], "steps": result.steps_done, "loss": result.final_loss,
            "seen": seen[-2:]}


def lora_list(run):
    import networks

    names = sorted(networks.available_networks)
    assert f"{PROJECT}-01" in names, names
    card = os.path.splitext(str(run.state["result"].files[0]))[0] + ".json"
    with open(card, encoding="utf-8") as f:
        return {"names": names, "card": json.load(f)}


def grid(run):
    """The Compare grid of the run, rendered by the WebUI's own pipeline and Lora extension."""
    from lora_trainer.compare.plan import GridSettings, compare_after_training
    from lora_trainer.compare.render import render_grid

    host = run.state["host"]
    project_dir = os.path.join(run.studio_root, PROJECT)
    lora_dir = run.state["result"].files[0].parent
    settings = GridSettings(weights=(0.0, 1.0), seeds=(7,), steps=2, width=64, height=64, sampler_name="Euler",
                            scheduler="Automatic", no_lora_column=True, prompt="a cat")
    plan = compare_after_training(project_dir, lora_dir, PROJECT, host.default_generation("sd15"), settings=settings)
    out = os.path.join(project_dir, "grid.png")
    result = render_grid(host, plan, out)
    by = {(c.epoch.label if c.epoch else None, c.weight): sha(im) for c, im in result.cells}
    labels = [e.label for e in plan.epochs]
    assert len(labels) == 2 and result.image.size[0] > 3 * 64, (labels, result.image.size)
    # weight 0 adds 0 x the delta (and the tag leaves the text), so it equals the no-LoRA column;
    # at weight 1 the two epochs differ
    none = by[(None, None)]
    assert all(by[(e, 0.0)] == none for e in labels), by
    assert len({by[(labels[0], 1.0)], by[(labels[1], 1.0)], none}) == 3, by
    return {"png": out, "size": result.image.size, "cells": len(result.cells),
            "prompts": [c.request.prompt for c, _ in result.cells]}


def txt2img_after(run):
    """Without the LoRA, the same image as before training: the WebUI was given back as it was."""
    digest = sha(run.state["host"].generate(request("a cat"))[0])
    assert digest == run.state["before"], (digest, run.state["before"])
    return {"sha256": digest}


# ---- the test's side: run a driver in a WebUI checkout ---------------------------------------------


def run_driver(webui_dir, python: str, driver: str, studio_root) -> list:
    """Link this repository into the WebUI's extensions/ (for the run only), run `driver` (a file of
    this folder) with the WebUI's Python in its folder, print each step's report and return them.
    Offline: Hugging Face lookups are told not to reach the network."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    link = Path(webui_dir) / "extensions" / "lora-studio"
    link.parent.mkdir(exist_ok=True)
    made = not link.exists()
    if made:
        link.symlink_to(repo, target_is_directory=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(repo)}
    try:
        proc = subprocess.run([python, str(Path(__file__).with_name(driver)), str(studio_root)], cwd=webui_dir, env=env,
                              capture_output=True, text=True, timeout=3000, check=False)
    finally:
        if made:
            link.unlink()
    # raw_decode: a progress bar's text may still follow the report on its line
    decode = json.JSONDecoder().raw_decode
    reports = [decode(line, line.index(MARKER) + len(MARKER))[0] for line in proc.stdout.splitlines() if MARKER in line]
    quiet = ("step", "ok", "seconds", "trace", "prompts", "names", "card", "seen")
    for s in reports:
        info = {k: v for k, v in s.items() if k not in quiet}
        print(f"{s['step']}: {'ok' if s['ok'] else 'FAILED'} in {s.get('seconds')} s {json.dumps(info, default=str)[:300]}")
    done = [s["step"] for s in reports if s["ok"]]
    failed = [s for s in reports if not s["ok"]]
    assert not failed and done[-1:] == ["txt2img_after"], (done, failed, proc.stderr[-3000:])
    return reports
