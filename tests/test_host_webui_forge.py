"""The WebUI host on Forge, against the fake WebUI plus stand-ins for the Forge modules it calls:
what a real Forge 2.0.1v1.10.1 run (tests/integration/webui_forge_driver.py) showed.

Before its first generation Forge's `shared.sd_model` is a FakeInitialModel: the host loads the
selected checkpoint as a generation would, on Forge's main thread (choosing it first under
--nowebui); an error on that thread reaches the caller; Forge's fp16 text encoder is cloned to
float32 for training on the CPU; and forgetting LoRAs makes the next generation start again from
the clean model even when its prompt names none.
"""

from __future__ import annotations

import importlib.machinery
import sys
import threading
import types

import pytest
import torch

from lora_trainer.errors import StudioError
from tests import test_host_webui as a1111_tests

# The fake WebUI on sys.path with fresh modules, and a host on it, as in test_host_webui.py (a
# fixture bound to a module's name is a fixture of that module too).
webui = a1111_tests.webui
host = a1111_tests.host


class FakeInitialModel:
    """modules/sd_models.py FakeInitialModel: what `shared.sd_model` is until Forge loads."""

    cond_stage_model = None


@pytest.fixture
def forge(webui, monkeypatch):
    """modules_forge.main_thread (a thread of its own runs each task; an exception is printed
    and the task's result is None, as in Forge), main_entry.refresh_model_loading_parameters,
    modules.sd_models.model_data / forge_model_reload, backend.memory_management."""
    log = types.SimpleNamespace(task_threads=[], reloads=[], refreshes=0, checkpoint="tiny-sd15", unloads=0)

    def run_and_wait_result(fn, *args):
        box = {}

        def work():
            log.task_threads.append(threading.get_ident())
            try:
                box["result"] = fn(*args)
            except Exception as e:  # noqa: BLE001 (Forge's Task.work prints it and returns None)
                print(e)
                box["result"] = None

        t = threading.Thread(target=work)
        t.start()
        t.join(60)
        return box["result"]

    model_data = types.SimpleNamespace(forge_loading_parameters={})

    def refresh_model_loading_parameters():
        log.refreshes += 1
        model_data.forge_loading_parameters = {"checkpoint_info": log.checkpoint}

    def forge_model_reload():
        log.reloads.append(threading.get_ident())
        if model_data.forge_loading_parameters["checkpoint_info"] is None:
            raise ValueError("You do not have any model! Please download at least one model in [models/Stable-diffusion].")
        webui.shared.sd_model = webui.models.forge("sd15")
        return webui.shared.sd_model, True

    package = types.ModuleType("modules_forge")
    package.__spec__ = importlib.machinery.ModuleSpec("modules_forge", None, is_package=True)
    package.__path__ = []
    package.main_thread = types.SimpleNamespace(run_and_wait_result=run_and_wait_result)
    package.main_entry = types.SimpleNamespace(refresh_model_loading_parameters=refresh_model_loading_parameters)
    monkeypatch.setitem(sys.modules, "modules_forge", package)
    monkeypatch.setitem(sys.modules, "modules_forge.main_thread", package.main_thread)
    monkeypatch.setitem(sys.modules, "modules_forge.main_entry", package.main_entry)
    monkeypatch.setitem(sys.modules, "modules.sd_models",
                        types.SimpleNamespace(model_data=model_data, forge_model_reload=forge_model_reload,
                                              select_checkpoint=lambda: log.checkpoint))

    def unload():
        log.unloads += 1

    mm = types.SimpleNamespace(unload_all_models=unload, soft_empty_cache=lambda: None,
                               get_torch_device=lambda: torch.device("cpu"))
    monkeypatch.setitem(sys.modules, "backend", types.SimpleNamespace(memory_management=mm))
    monkeypatch.setitem(sys.modules, "backend.memory_management", mm)
    webui.shared.sd_model = FakeInitialModel()
    log.model_data = model_data
    return log


def in_worker(fn):
    """Call fn in another thread, as the WebUI's request handlers do (not Forge's main thread)."""
    box = {}

    def work():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 (re-raised in the test's thread)
            box["error"] = e

    t = threading.Thread(target=work)
    t.start()
    t.join(120)
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_checkpoint_loads_on_the_main_thread_before_the_first_generation(webui, forge):
    h = host()
    assert h.name == "forge"
    assert in_worker(h.model_arch) == "sd15"
    assert forge.refreshes == 1  # --nowebui: nothing had chosen the checkpoint
    assert len(forge.reloads) == 1 and forge.reloads == forge.task_threads  # on the "main thread"
    assert hasattr(webui.shared.sd_model, "forge_objects")
    assert in_worker(h.model_arch) == "sd15" and len(forge.reloads) == 1  # loaded once


def test_the_family_comes_from_the_checkpoint_header_without_loading(webui, forge, tmp_path):
    """Building the tab asks the family for its defaults: Forge's start-up must not load a model
    for that (Forge itself loads at the first generation)."""
    from lora_trainer.models.demo import write_demo_checkpoint

    path = write_demo_checkpoint(tmp_path / "tiny-sdxl.safetensors", "sdxl", dtype="fp16")
    forge.checkpoint = types.SimpleNamespace(filename=str(path))  # a CheckpointInfo
    assert in_worker(host().model_arch) == "sdxl"
    assert forge.reloads == [] and isinstance(webui.shared.sd_model, FakeInitialModel)


def test_a_chosen_checkpoint_is_not_chosen_again(webui, forge):
    forge.model_data.forge_loading_parameters = {"checkpoint_info": "chosen in the UI"}
    assert in_worker(host().model_arch) == "sd15"
    assert forge.refreshes == 0 and len(forge.reloads) == 1


def test_no_checkpoint_is_a_studio_error(webui, forge):
    forge.checkpoint = None
    with pytest.raises(StudioError) as e:
        in_worker(host().model_arch)
    assert "You do not have any model" in e.value.message and "models/Stable-diffusion" in e.value.fix


def test_main_thread_errors_reach_the_caller_and_the_main_thread_calls_in_place(webui, forge):
    from lora_trainer.host.webui_compat import run_on_main_thread

    def boom():
        raise RuntimeError("sampler failed")

    with pytest.raises(RuntimeError, match="sampler failed"):
        in_worker(lambda: run_on_main_thread(boom))
    assert len(forge.task_threads) == 1
    assert run_on_main_thread(lambda a: a + 1, 41) == 42  # the test runs on the main thread: no task
    assert len(forge.task_threads) == 1


def test_fp16_text_encoder_is_cloned_to_float32_on_the_cpu(webui, forge):
    sd_model = webui.models.forge("sd15")
    te = sd_model.forge_objects.clip.cond_stage_model["clip_l"].transformer
    with torch.inference_mode():  # Forge keeps the text encoder in fp16, also on the CPU
        te.half()
    webui.shared.sd_model = sd_model
    with host().borrow_bundle() as bundle:
        dtypes = {t.dtype for m in bundle.modules().values() for t in m.state_dict().values() if t.is_floating_point()}
        assert dtypes == {torch.float32}
        ours = bundle.text_encoders[0][1].text_model.embeddings.token_embedding.weight
        assert torch.equal(ours, te.text_model.embeddings.token_embedding.weight.float())
        cond = bundle.encode_prompts(["a"], 64, 64)
        x = torch.randn(1, 4, 8, 8, requires_grad=True)
        bundle.predict(x, torch.tensor([10.0]), cond.context, cond.y).sum().backward()
        assert cond.context.dtype == torch.float32 and x.grad is not None and x.grad.abs().sum() > 0
    assert te.text_model.embeddings.token_embedding.weight.dtype == torch.float16  # Forge's own is untouched


def test_forgotten_loras_are_taken_off_by_a_prompt_without_one(webui, forge):
    """sd_forge_lora networks.load_networks: nothing happens when `current_lora_hash` equals the
    prompt's LoRA hash; otherwise forge_objects start again from forge_objects_original."""
    from lora_trainer.host.webui_compat import forge_forget_loras

    sd_model = webui.models.forge("sd15")
    clean, patched = object(), object()
    sd_model.forge_objects_original = types.SimpleNamespace(unet=clean)

    def load_networks(names):
        wanted = str([[n, 1.0] for n in names])
        if sd_model.current_lora_hash == wanted:
            return
        sd_model.current_lora_hash = wanted
        sd_model.forge_objects.unet = patched if names else sd_model.forge_objects_original.unet

    load_networks(["alice-01"])
    assert sd_model.forge_objects.unet is patched
    forge_forget_loras(sd_model)  # what the host does after training and when files change
    load_networks([])
    assert sd_model.forge_objects.unet is clean
