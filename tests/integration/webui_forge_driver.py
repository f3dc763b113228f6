"""Run inside a Forge 2.0.1v1.10.1 checkout (cwd = the Forge folder, its Python): initialise Forge
in-process as its webui.py does, then drive LoRA Studio through its WebUI host. Prints one JSON
line per step ({"step", "ok", ...}) so the test (and a person) sees how far it got.

    python webui_forge_driver.py STUDIO_ROOT

Forge runs every generation on its main thread (modules_forge/main_thread.py: txt2img hands
process_images to `main_thread.loop()` and waits), so here, as in Forge's webui.py, the main thread
runs that loop and the steps run in a worker thread, like the WebUI's request handlers. The steps
both WebUIs share are in webui_steps.py.
"""

import os
import sys
import threading

import webui_steps as S


def boot(run):
    from modules_forge.initialization import initialize_forge

    initialize_forge()
    from modules import initialize

    initialize.imports()
    initialize.initialize()
    from modules import script_callbacks, shared

    script_callbacks.before_ui_callback()  # as webui.py's api_only_worker(): Lora registers <lora:...> here
    from modules_forge import forge_version

    return {"lora_dir": shared.cmd_opts.lora_dir, "forge": forge_version.version}


def model(run):
    # Forge's UI picks the checkpoint while it is built (main_entry.forge_main_entry); --nowebui
    # builds no UI, so do that one call. The model itself loads on first use, as in Forge.
    from modules import shared
    from modules_forge import main_entry

    from lora_trainer.host.webui import WebUIHost

    main_entry.refresh_model_loading_parameters()
    host = run.state["host"] = WebUIHost()
    arch = host.model_arch()
    # The family comes from the checkpoint's header: neither the tab nor this loaded a model.
    sd_model = shared.sd_model
    assert arch == "sd15" and not hasattr(sd_model, "forge_objects"), (arch, type(sd_model))
    return {"host": host.name, "arch": arch, "class": type(sd_model).__name__}


def txt2img_before(run):
    from modules import shared

    info = S.txt2img_before(run)  # Forge loads the model for it
    sd_model = shared.sd_model
    assert sd_model.is_sd1 and hasattr(sd_model, "forge_objects"), type(sd_model)
    return {**info, "model": sd_model.sd_checkpoint_info.name_for_extra}


def lora_patches(patcher, stem):
    """Keys a LoRA file patches in a Forge ModelPatcher (backend/patcher/base.py `lora_patches`,
    keyed by (filename, strength, strength_model, online))."""
    if patcher is None:
        return 0
    return sum(len(p) for ident, p in patcher.lora_patches.items() if os.path.basename(str(ident[0])).startswith(stem))


def lora_applies(run):
    import networks
    from modules import shared

    stem = f"{S.PROJECT}-01"
    image = run.state["host"].generate(S.request(f"a cat <lora:{stem}:1>"))[0]
    applied = shared.sd_model.forge_objects_after_applying_lora
    patched = {"unet": lora_patches(applied.unet, stem), "clip": lora_patches(getattr(applied.clip, "patcher", None), stem)}
    loaded = [n.name for n in networks.loaded_networks]
    assert loaded == [stem] and patched["unet"] > 0, (loaded, patched)
    assert S.sha(image) != run.state["before"], "the LoRA changed nothing"
    return {"loaded": loaded, "patched_keys": patched, "sha256": S.sha(image)}


def main():
    run = S.Run(studio_root=sys.argv[1], webui=os.getcwd())
    sys.path.insert(0, run.webui)
    # --always-cpu is Forge's backend flag (backend/args.py); the rest are modules/cmd_args.py's.
    sys.argv = ["webui.py", "--always-cpu", "--skip-torch-cuda-test", "--skip-prepare-environment", "--skip-install",
                "--skip-version-check", "--api", "--nowebui", "--no-download-sd-model", "--disable-safe-unpickle"]
    os.environ.setdefault("LORA_STUDIO_ROOT", run.studio_root)
    # Booting stays on the main thread, as in Forge's webui.py (signal handlers are set there).
    if not run.step("boot", boot):
        os._exit(1)
    steps = [("install_plan", S.install_plan), ("tab", S.tab), ("model", model), ("txt2img_before", txt2img_before),
             ("train", S.train), ("lora_list", S.lora_list), ("lora_applies", lora_applies), ("grid", S.grid),
             ("txt2img_after", S.txt2img_after)]
    threading.Thread(target=run.steps, args=(steps,), daemon=True).start()
    from modules_forge import main_thread

    main_thread.loop()


if __name__ == "__main__":
    main()
