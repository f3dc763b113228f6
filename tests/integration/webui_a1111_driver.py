"""Run inside an AUTOMATIC1111 1.10.1 checkout (cwd = the WebUI folder, its Python): initialise the
WebUI in-process as webui.py does, then drive LoRA Studio through its WebUI host. Prints one JSON
line per step ({"step", "ok", ...}) so the test (and a person) sees how far it got.

    python webui_a1111_driver.py STUDIO_ROOT

The steps both WebUIs share are in webui_steps.py; booting, the model and the Lora extension's
own bookkeeping are A1111's here.
"""

import os
import sys

import webui_steps as S


def boot(run):
    from modules import initialize

    initialize.imports()
    initialize.initialize()
    from modules import script_callbacks, shared

    script_callbacks.before_ui_callback()  # as webui.py's api_only(): the Lora extension registers <lora:...> here
    return {"lora_dir": shared.cmd_opts.lora_dir}


def model(run):
    from modules import shared

    from lora_trainer.host.webui import WebUIHost

    sd_model = shared.sd_model  # A1111 loaded it at start-up
    assert sd_model.is_sd1, "not SD1"
    host = run.state["host"] = WebUIHost()
    return {"model": sd_model.sd_checkpoint_info.name_for_extra, "host": host.name, "arch": host.model_arch()}


def lora_applies(run):
    import networks

    image = run.state["host"].generate(S.request(f"a cat <lora:{S.PROJECT}-01:1>"))[0]
    loaded = [(n.name, len(n.modules)) for n in networks.loaded_networks]
    assert loaded and loaded[0][1] > 0, loaded
    assert S.sha(image) != run.state["before"], "the LoRA changed nothing"
    return {"loaded": loaded, "sha256": S.sha(image)}


def main():
    run = S.Run(studio_root=sys.argv[1], webui=os.getcwd())
    sys.path.insert(0, run.webui)
    sys.argv = ["webui.py", "--use-cpu", "all", "--no-half", "--skip-torch-cuda-test", "--skip-prepare-environment",
                "--skip-install", "--skip-version-check", "--api", "--nowebui", "--no-download-sd-model",
                "--disable-safe-unpickle", "--precision", "full"]
    os.environ.setdefault("LORA_STUDIO_ROOT", run.studio_root)
    run.steps([("boot", boot), ("install_plan", S.install_plan), ("tab", S.tab), ("model", model),
               ("txt2img_before", S.txt2img_before), ("train", S.train), ("lora_list", S.lora_list),
               ("lora_applies", lora_applies), ("grid", S.grid), ("txt2img_after", S.txt2img_after)])


if __name__ == "__main__":
    main()
