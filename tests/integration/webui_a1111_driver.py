"""Run inside an AUTOMATIC1111 1.10.1 checkout (cwd = the WebUI folder, its Python): initialise the
WebUI in-process as webui.py does, then drive LoRA Studio through its WebUI host. Prints one JSON
line per step ({"step", "ok", ...}) so the test (and a person) sees how far it got.

    python webui_a1111_driver.py STUDIO_ROOT
"""

import hashlib
import json
import os
import sys
import time
import traceback

STEPS = []


def report(step, ok, **info):
    line = {"step": step, "ok": ok, **info}
    STEPS.append(line)
    print("\nLORA_STUDIO_STEP " + json.dumps(line, default=str), flush=True)


def run(step, fn):
    t = time.time()
    try:
        info = fn() or {}
        report(step, True, seconds=round(time.time() - t, 1), **info)
        return True
    except BaseException as e:  # noqa: BLE001 (report every failure, then stop)
        report(step, False, seconds=round(time.time() - t, 1), error=f"{type(e).__name__}: {e}",
               trace=traceback.format_exc()[-3000:])
        return False


def main():
    studio_root = sys.argv[1]
    webui = os.getcwd()
    sys.path.insert(0, webui)
    sys.argv = ["webui.py", "--use-cpu", "all", "--no-half", "--skip-torch-cuda-test", "--skip-prepare-environment",
                "--skip-install", "--skip-version-check", "--api", "--nowebui", "--no-download-sd-model",
                "--disable-safe-unpickle", "--precision", "full"]
    os.environ.setdefault("LORA_STUDIO_ROOT", studio_root)
    state = {}

    def boot():
        from modules import initialize

        initialize.imports()
        initialize.initialize()
        from modules import script_callbacks, shared

        script_callbacks.before_ui_callback()  # as webui.py's api_only(): the Lora extension registers <lora:...> here

        return {"lora_dir": shared.cmd_opts.lora_dir}

    def install_plan():
        """install.py in the WebUI's own venv: it would install only what the WebUI lacks (the
        ONNX runtime for the tagger), never anything the WebUI provides or pins."""
        import importlib.util

        import launch

        spec = importlib.util.spec_from_file_location("lora_studio_install", os.path.join(webui, "extensions", "lora-studio", "install.py"))
        install = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(install)
        candidates = {*install.REQUIRED, *install.PROTECTED, install.ONNX_CPU, install.ONNX_GPU, "tomli"}
        installed = sorted(n for n in candidates if launch.is_installed(n))
        plan = install.plan_installs(set(installed), cuda_available=False)
        assert set(plan) <= {install.ONNX_CPU}, plan
        return {"installed": installed, "would_install": plan}

    def tab():
        from modules import script_callbacks

        script_callbacks.ui_settings_callback()
        tabs = script_callbacks.ui_tabs_callback()
        titles = [t[1] for t in tabs]
        assert "LoRA Studio" in titles, titles
        # Compare's "Send to txt2img": the WebUI's own paste button, bound to the clicked cell's parameters
        from modules import infotext_utils

        bound = [b.tabname for b in infotext_utils.registered_param_bindings
                 if getattr(b.source_text_component, "elem_id", None) == "lora_studio_compare_cell_params"]
        assert bound == ["txt2img"], bound
        return {"tabs": titles, "send_to": bound}

    def model():
        from modules import shared

        sd_model = shared.sd_model
        assert sd_model.is_sd1, "not SD1"
        from lora_trainer.host.webui import WebUIHost

        state["host"] = WebUIHost()
        return {"model": sd_model.sd_checkpoint_info.name_for_extra, "host": state["host"].name,
                "arch": state["host"].model_arch()}

    def request(prompt):
        from lora_trainer.host.base import GenerationRequest

        return GenerationRequest(prompt, seed=7, steps=2, width=64, height=64, sampler_name="Euler", scheduler="Automatic")

    def txt2img_before():
        image = state["host"].generate(request("a cat"))[0]
        state["before"] = hashlib.sha256(image.tobytes()).hexdigest()
        return {"sha256": state["before"], "size": image.size}

    def train():
        from lora_trainer.demo.dataset import make_demo_dataset
        from lora_trainer.progress import CancelToken
        from lora_trainer.project import create_project
        from lora_trainer.train.config import DatasetFolder, TrainConfig
        from lora_trainer.train.run import train_job
        from modules import call_queue, shared

        project = create_project(studio_root, "alice")
        make_demo_dataset(project.dataset_dir, count=2, size=64)
        config = TrainConfig.sd15_defaults().replace(
            resolution=256, min_bucket_reso=256, bucket_no_upscale=True, optimizer="AdamW", optimizer_args={},
            mixed_precision="no", max_token_length=75, lr_scheduler="constant", lr_warmup_ratio=0.0, network_dim=4,
            network_alpha=4.0, max_train_epochs=2, train_batch_size=2, datasets=[DatasetFolder(repeats=2)])
        host = state["host"]
        seen = []

        def progress(event):
            if "step" in event.extra:
                seen.append({"step": event.extra["step"], "locked": call_queue.queue_lock._lock.locked(),
                             "job_count": shared.state.job_count, "textinfo": shared.state.textinfo})

        fn = host.wrap_job("Training alice", lambda p, c: train_job(project, config, host, p, c), config=config, project=project)
        result = fn(progress, CancelToken())
        state["result"] = result
        return {"files": [str(p) for p in result.files], "steps": result.steps_done, "loss": result.final_loss,
                "seen": seen[-2:]}

    def lora_list():
        import networks

        names = sorted(networks.available_networks)
        assert "alice-01" in names, names
        card = os.path.splitext(str(state["result"].files[0]))[0] + ".json"
        return {"names": names, "card": json.load(open(card))}

    def lora_applies():
        import networks

        image = state["host"].generate(request("a cat <lora:alice-01:1>"))[0]
        loaded = [(n.name, len(n.modules)) for n in networks.loaded_networks]
        assert loaded and loaded[0][1] > 0, loaded
        return {"loaded": loaded, "sha256": hashlib.sha256(image.tobytes()).hexdigest()}

    def grid():
        """The Compare grid of the run, rendered by the WebUI's own pipeline and Lora extension."""
        from lora_trainer.compare.plan import GridSettings, compare_after_training
        from lora_trainer.compare.render import render_grid

        host = state["host"]
        project_dir = os.path.join(studio_root, "alice")
        lora_dir = state["result"].files[0].parent
        settings = GridSettings(weights=(0.0, 1.0), seeds=(7,), steps=2, width=64, height=64, sampler_name="Euler",
                                scheduler="Automatic", no_lora_column=True, prompt="a cat")
        plan = compare_after_training(project_dir, lora_dir, "alice", host.default_generation("sd15"), settings=settings)
        out = os.path.join(studio_root, "alice", "grid.png")
        result = render_grid(host, plan, out)
        by = {(c.epoch.label if c.epoch else None, c.weight): hashlib.sha256(im.tobytes()).hexdigest()
              for c, im in result.cells}
        labels = [e.label for e in plan.epochs]
        assert len(labels) == 2 and result.image.size[0] > 3 * 64, (labels, result.image.size)
        # weight 0 is the model itself (the Lora extension adds 0 x its delta, and strips the tag
        # from the text), so it equals the no-LoRA column; at weight 1 the two epochs differ
        none = by[(None, None)]
        assert all(by[(e, 0.0)] == none for e in labels), by
        assert len({by[(labels[0], 1.0)], by[(labels[1], 1.0)], none}) == 3, by
        return {"png": out, "size": result.image.size, "cells": len(result.cells),
                "prompts": [c.request.prompt for c, _ in result.cells]}

    def txt2img_after():
        image = state["host"].generate(request("a cat"))[0]
        digest = hashlib.sha256(image.tobytes()).hexdigest()
        assert digest == state["before"], (digest, state["before"])
        return {"sha256": digest}

    for step, fn in (("boot", boot), ("install_plan", install_plan), ("tab", tab), ("model", model), ("txt2img_before", txt2img_before),
                     ("train", train), ("lora_list", lora_list), ("lora_applies", lora_applies),
                     ("grid", grid), ("txt2img_after", txt2img_after)):
        if not run(step, fn) and step not in ("install_plan", "tab", "lora_applies", "grid"):
            break  # later steps need this one (the tab and applying the LoRA are independent)
    os._exit(0 if all(s["ok"] for s in STEPS) else 1)


if __name__ == "__main__":
    main()
