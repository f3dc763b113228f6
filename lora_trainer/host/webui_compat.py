"""Every WebUI attribute path and call LoRA Studio uses, in one place, with the file it comes from.

Versions read: AUTOMATIC1111 1.10.1 (commit 82a973c) and Forge 2.0.1v1.10.1 (commit dfdcbab); the
facts are in shared/reference/webui-host.md (section numbers below). When a WebUI changes one of
these, this file is the one to change. Which WebUI runs is told by feature, not version: a loaded
model with `forge_objects` is Forge (§6.5).

`modules.*` is imported inside the functions only, so this file can be imported (and its pure
parts tested) without a WebUI.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import StudioError

if TYPE_CHECKING:
    import torch
    from PIL import Image

A1111, FORGE = "a1111", "forge"

# ---- 1. where the model's parts are (§2.2, §2.3, §6.1, §7) -------------------------------------

# (single-file checkpoint prefix, attribute path from `shared.sd_model`). A1111: ldm
# `LatentDiffusion` (modules/sd_models.py + repositories/stable-diffusion-stability-ai) and sgm
# `DiffusionEngine` (repositories/generative-models). The text encoders are taken whole: the hijack
# (modules/sd_hijack.py) wraps them and their token embeddings in `.wrapped`, which
# `normalize_webui_key` removes again.
A1111_PARTS: dict[str, tuple[tuple[str, str], ...]] = {
    "sd15": (
        ("model.diffusion_model.", "model.diffusion_model"),  # ldm openaimodel.UNetModel
        ("first_stage_model.", "first_stage_model"),  # ldm AutoencoderKL
        ("cond_stage_model.", "cond_stage_model"),  # FrozenCLIPEmbedderWithCustomWords -> .wrapped.transformer (HF CLIP-L)
    ),
    "sdxl": (
        ("model.diffusion_model.", "model.diffusion_model"),  # sgm openaimodel.UNetModel
        ("first_stage_model.", "first_stage_model"),  # sgm AutoencoderKLInferenceWrapper
        ("conditioner.", "conditioner"),  # GeneralConditioner: embedders.0 HF CLIP-L, embedders.1 open_clip bigG
    ),
}

# Forge (backend/diffusion_engine/sd15.py, sdxl.py; backend/nn/unet.py, vae.py, clip.py): the UNet
# and VAE keep ldm names; both text towers are Hugging Face CLIPTextModels (bigG too, with a
# `text_projection` Linear), so bigG is turned into open_clip layout by the host.
FORGE_PARTS: dict[str, tuple[tuple[str, str], ...]] = {
    "sd15": (
        ("model.diffusion_model.", "forge_objects.unet.model.diffusion_model"),
        ("first_stage_model.", "forge_objects.vae.first_stage_model"),
        ("cond_stage_model.transformer.", "forge_objects.clip.cond_stage_model.clip_l.transformer"),
    ),
    "sdxl": (
        ("model.diffusion_model.", "forge_objects.unet.model.diffusion_model"),
        ("first_stage_model.", "forge_objects.vae.first_stage_model"),
        ("conditioner.embedders.0.transformer.", "forge_objects.clip.cond_stage_model.clip_l.transformer"),
        ("conditioner.embedders.1.hf.", "forge_objects.clip.cond_stage_model.clip_g.transformer"),  # HF names
    ),
}
FORGE_BIGG_HF_PREFIX = "conditioner.embedders.1.hf."

# Where a Forge keeps the clean weights a LoRA merge replaced: (attribute path of the patched model,
# the prefix its keys add before our part's own names, the attribute path of its ModelPatcher).
# Forge 2 keeps them in `<model>.lora_loader.backup` (backend/patcher/lora.py LoraLoader.refresh),
# tensors; Forge Neo's ComfyUI-style patcher in `<patcher>.backup` (backend/patcher/base.py
# patch_weight_to_device), (weight, inplace_update) tuples, with the same keys.
FORGE_BACKUPS: dict[str, tuple[str, str, str]] = {
    "forge_objects.unet.model.diffusion_model": ("forge_objects.unet.model", "diffusion_model.", "forge_objects.unet"),
    "forge_objects.clip.cond_stage_model.clip_l.transformer": ("forge_objects.clip.cond_stage_model", "clip_l.transformer.",
                                                               "forge_objects.clip.patcher"),
    "forge_objects.clip.cond_stage_model.clip_g.transformer": ("forge_objects.clip.cond_stage_model", "clip_g.transformer.",
                                                               "forge_objects.clip.patcher"),
}


def attr_path(obj: Any, path: str) -> Any:
    """`obj.a.b.c` for path "a.b.c"; None when a link is missing or None."""
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def normalize_webui_key(key: str) -> str:
    """A WebUI module's state-dict key -> the single-file checkpoint's name for it.

    A1111's hijack puts each text encoder (`cond_stage_model.wrapped`, `embedders.N.wrapped`) and
    each token embedding (`token_embedding.wrapped`, `EmbeddingsWithFixes`) behind a `.wrapped`
    level that no checkpoint has; our own modules never use that name."""
    return ".".join(part for part in key.split(".") if part != "wrapped")


def host_kind(sd_model: Any) -> str:
    """"forge" or "a1111" (§6.5): Forge's loaded model has `forge_objects`; before Forge's first
    load `shared.sd_model` is a FakeInitialModel, so the `modules_forge` package is asked too."""
    if hasattr(sd_model, "forge_objects"):
        return FORGE
    import importlib.util

    try:
        return FORGE if importlib.util.find_spec("modules_forge") is not None else A1111
    except (ImportError, ValueError):
        return A1111


def unsupported_forge() -> StudioError | None:
    """A sentence when this is a Forge of the Forge 1 lineage (Forge Classic, reForge: `ldm_patched`
    and no `backend/`): its model code is not the Forge 2 code the studio lends to the trainer, which
    would fail on the first Forge 2 import. The dataset tools work there; training does not yet."""
    import importlib.util

    try:
        if "backend" in sys.modules or importlib.util.find_spec("backend") is not None:  # Forge 2 and Neo
            return None
        if "ldm_patched" not in sys.modules and importlib.util.find_spec("ldm_patched") is None:
            return None
    except (ImportError, ValueError):
        return None
    return StudioError(
        "This WebUI is a Forge of the Forge 1 lineage (Forge Classic or reForge), whose model code LoRA Studio "
        "can not lend to the trainer yet: training works in AUTOMATIC1111 1.10, Forge 2 and Forge Neo.",
        "Meanwhile train with the standalone studio on the same checkpoint file: "
        "python -m lora_trainer ui (or ./studio.sh ui), and put the LoRAs in this WebUI's models/Lora.",
    )


def model_arch(sd_model: Any) -> str:
    """"sd15" | "sdxl" from the flags `sd_models.set_model_type` sets (also on Forge's models)."""
    name = model_name(sd_model)
    if getattr(sd_model, "is_sdxl", False):
        if getattr(sd_model, "is_sdxl_inpaint", False):
            raise StudioError(f"The loaded model {name} is an SDXL inpainting model.", "Load the regular SDXL model to train.")
        return "sdxl"
    if getattr(sd_model, "is_sd1", False):
        return "sd15"
    what = "SD2" if getattr(sd_model, "is_sd2", False) else "SD3" if getattr(sd_model, "is_sd3", False) else type(sd_model).__name__
    raise StudioError(f"The loaded model {name} is {what}; LoRA Studio trains on SD1.5 and SDXL models.",
                      "Choose an SD1.5 or SDXL checkpoint in the WebUI's checkpoint list.")


def model_name(sd_model: Any) -> str:
    """The checkpoint's stem (`CheckpointInfo.name_for_extra`, modules/sd_models.py)."""
    info = getattr(sd_model, "sd_checkpoint_info", None)
    name = getattr(info, "name_for_extra", None) or os.path.splitext(os.path.basename(str(getattr(sd_model, "sd_model_checkpoint", "") or "")))[0]
    return name or "the loaded model"


def model_hash(sd_model: Any) -> str:
    return str(getattr(sd_model, "sd_model_hash", "") or "")


def prediction(sd_model: Any, kind: str) -> str:
    """"eps" | "v": A1111 `sd_model.parameterization` (ldm ddpm.py; sd_models_xl.extend_sdxl for
    SDXL); Forge `forge_objects.unet.model.predictor.prediction_type` (backend/modules/k_prediction.py)."""
    if kind == FORGE:
        kind_name = str(attr_path(sd_model, "forge_objects.unet.model.predictor.prediction_type") or "epsilon")
        return "v" if kind_name.startswith("v") else "eps"
    return "v" if str(getattr(sd_model, "parameterization", "eps")) == "v" else "eps"


@dataclass
class Part:
    """One of the model's modules as a checkpoint prefix sees it."""

    prefix: str  # e.g. "model.diffusion_model."
    path: str  # attribute path from shared.sd_model
    module: Any  # torch.nn.Module


def model_parts(sd_model: Any, kind: str, arch: str) -> list[Part]:
    """The loaded model's modules under their checkpoint prefixes; StudioError when one is missing."""
    table = FORGE_PARTS if kind == FORGE else A1111_PARTS
    parts = []
    for prefix, path in table[arch]:
        module = attr_path(sd_model, path)
        if module is None:
            raise StudioError(
                f"The loaded model {model_name(sd_model)} has no `{path}`, which LoRA Studio reads on "
                f"{'Forge' if kind == FORGE else 'AUTOMATIC1111'}.",
                "Generate one image so the WebUI finishes loading the model, then start again; if it persists this "
                "WebUI version is not supported (AUTOMATIC1111 1.10 and Forge 2.0 are).")
        parts.append(Part(prefix, path, module))
    return parts


def borrowed_tensors(parts: list[Part]) -> dict[str, torch.Tensor]:
    """The parts' parameters and buffers under single-file checkpoint keys. Each value is a
    detached alias of the WebUI's tensor (`state_dict()`), so it shares storage: nothing is copied."""
    out: dict[str, torch.Tensor] = {}
    for part in parts:
        for key, tensor in part.module.state_dict().items():
            out[part.prefix + normalize_webui_key(key)] = tensor
    return out


def forge_clean_sources(sd_model: Any, part: Part) -> Mapping[str, Any]:
    """Forge: the clean (un-merged) tensor of each key of a part, where a LoRA merge replaced it
    (Forge 2's LoraLoader.backup, Neo's ModelPatcher.backup); keys are the part's own names."""
    spec = FORGE_BACKUPS.get(part.path)
    if spec is None:
        return {}
    owner, lead, patcher = spec
    out = {}
    for backup in (attr_path(sd_model, owner + ".lora_loader.backup"), attr_path(sd_model, patcher + ".backup")):
        if not isinstance(backup, Mapping):
            continue
        for k, v in backup.items():
            if isinstance(k, str) and k.startswith(lead):
                out.setdefault(k[len(lead):], getattr(v, "weight", v))  # Neo: (weight, inplace_update)
    return out


def forge_quantization(sd_model: Any) -> str | None:
    """Why the loaded Forge UNet can not be trained on, or None: NF4/FP4 (bitsandbytes
    `ForgeParams4bit`, backend/operations_bnb.py), GGUF (`ParameterGGUF`, backend/operations_gguf.py)
    or fp8 storage (`KModel.storage_dtype`, backend/modules/k_model.py)."""
    import torch

    kmodel = attr_path(sd_model, "forge_objects.unet.model")
    storage = getattr(kmodel, "storage_dtype", None)
    if isinstance(storage, str) and storage:
        return storage.upper()
    if storage is not None and storage not in (torch.float32, torch.float16, torch.bfloat16):
        return str(storage).removeprefix("torch.")
    unet = getattr(kmodel, "diffusion_model", None)
    for p in unet.parameters() if unet is not None else ():
        cls = type(p).__name__
        if "4bit" in cls or "GGUF" in cls:
            return "NF4/FP4" if "4bit" in cls else "GGUF"
        if p.dtype in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)):
            return str(p.dtype).removeprefix("torch.")
    return None


# ---- 2. the WebUI's shared objects -----------------------------------------------------------


def shared() -> Any:
    from modules import shared as s  # modules/shared.py

    return s


def loaded_model() -> Any:
    """`shared.sd_model` (modules/shared_items.py): the first access loads the checkpoint, so the
    caller holds the queue lock. Forge loads only when it first generates; until then its
    `sd_model` is a FakeInitialModel, so the checkpoint is loaded here the same way."""
    model = shared().sd_model
    if hasattr(model, "forge_objects") or host_kind(model) != FORGE:
        return model
    return forge_load_model()


def forge_selected_arch() -> str | None:
    """Forge before its first generation: the family of the checkpoint it will load, read from the
    file's header (modules/sd_models.py select_checkpoint; main_entry's loading parameters when the
    UI chose one), so building the tab does not load a model Forge would load only later."""
    from modules import sd_models

    params = getattr(sd_models.model_data, "forge_loading_parameters", None) or {}
    info = params.get("checkpoint_info") or sd_models.select_checkpoint()
    filename = getattr(info, "filename", None)
    if not filename:
        return None
    from ..models.checkpoint import describe

    return describe(filename)["arch"]


def forge_load_model() -> Any:
    """Forge's selected checkpoint, loaded as its first generation would (processing.py
    manage_model_and_prompt_cache -> sd_models.forge_model_reload), on its main thread. Forge's
    UI chooses the checkpoint while it is built (modules_forge/main_entry.py
    refresh_model_loading_parameters); with --nowebui nothing has, so that is done first."""
    from modules import sd_models

    if not sd_models.model_data.forge_loading_parameters:
        from modules_forge import main_entry

        main_entry.refresh_model_loading_parameters()
    try:
        model, _ = run_on_main_thread(sd_models.forge_model_reload)
    except ValueError as e:  # "You do not have any model! ..."
        raise StudioError(f"Forge could not load a checkpoint: {e}",
                          "Put an SD1.5 or SDXL checkpoint in models/Stable-diffusion and choose it in Forge.") from e
    return model


def queue_lock() -> Any:
    """modules/call_queue.py `queue_lock`: a FIFOLock, not re-entrant (§3.2)."""
    from modules import call_queue

    return call_queue.queue_lock


def state() -> Any:
    """`shared.state` (modules/shared_state.py State): job, job_count, job_no, sampling_step,
    sampling_steps, textinfo, interrupted; begin(job=...) / end() / interrupt()."""
    return shared().state


@contextlib.contextmanager
def progress_task(task_id: str) -> Iterator[None]:
    """Register a task id with modules/progress.py (start_task / finish_task) when it has them,
    so `/internal/progress` reports our job like a txt2img task."""
    try:
        from modules import progress as webui_progress
    except ImportError:
        yield
        return
    start = getattr(webui_progress, "start_task", None)
    finish = getattr(webui_progress, "finish_task", None)
    if start is not None:
        start(task_id)
    try:
        yield
    finally:
        if finish is not None:
            finish(task_id)


def cmd_flag(name: str) -> bool:
    """A command-line flag (`shared.cmd_opts`, modules/cmd_args.py), False when absent."""
    return bool(getattr(shared().cmd_opts, name, False))


def training_device(kind: str) -> torch.device:
    """Where the WebUI computes: `modules.devices.device` (A1111); Forge's
    `backend.memory_management.get_torch_device()`."""
    import torch

    if kind == FORGE:
        from backend import memory_management

        return torch.device(memory_management.get_torch_device())
    from modules import devices

    return torch.device(devices.device)


def torch_gc() -> None:
    """modules/devices.py torch_gc: empty the CUDA cache."""
    from modules import devices

    devices.torch_gc()


def medvram_active(sd_model: Any) -> bool:
    """`sd_model.lowvram` is set by modules/lowvram.py setup_for_low_vram (--medvram / --lowvram)."""
    return bool(getattr(sd_model, "lowvram", False))


def drop_hypernetworks() -> int:
    """Empty `shared.loaded_hypernetworks` (modules/hypernetworks/hypernetwork.py); the next
    generation that names one loads it again (the hypernetwork trainer does the same, §3.1)."""
    loaded = getattr(shared(), "loaded_hypernetworks", None)
    if not loaded:
        return 0
    n = len(loaded)
    loaded.clear()
    return n


# ---- 3. the built-in Lora extension (§4) -----------------------------------------------------


def lora_extension() -> Any:
    """The built-in Lora extension's `networks` module (extensions-builtin/Lora/networks.py on
    A1111, extensions-builtin/sd_forge_lora/networks.py on Forge), or None when it is not loaded."""
    module = sys.modules.get("networks")
    return module if module is not None and hasattr(module, "list_available_networks") else None


def a1111_merged_layers(root: Any) -> list[Any]:
    """Layers under `root` that hold a merged LoRA (`network_current_names` non-empty, §4.7)."""
    return [m for m in root.modules() if getattr(m, "network_current_names", ())]


def a1111_unmerge(roots: list[Any], names: set[str] | None = None) -> int:
    """Put back the original weights of every layer under `roots` that a LoRA was merged into
    (all, or only layers that hold one of `names`): networks.network_restore_weights_from_backup
    under no_grad (the backup copy_ into a parameter that requires grad fails with grad on,
    §2.8), then `network_current_names = ()` so the next generation merges again. Returns the
    number of layers restored."""
    import torch

    networks = lora_extension()
    if networks is None:
        return 0
    restore = networks.network_restore_weights_from_backup
    n = 0
    with torch.no_grad():
        for root in roots:
            for m in a1111_merged_layers(root):
                if names is not None and not {entry[0] for entry in m.network_current_names} & names:
                    continue
                restore(m)
                m.network_current_names = ()
                n += 1
    return n


def a1111_forget_networks(names: set[str] | None = None) -> None:
    """Drop networks from the extension's `loaded_networks` / `networks_in_memory` (all, or `names`),
    so the next generation reads their files again (load_networks keeps in-memory copies, §4.7)."""
    networks = lora_extension()
    if networks is None:
        return
    loaded = getattr(networks, "loaded_networks", None)
    if loaded is not None:
        loaded[:] = [n for n in loaded if names is not None and n.name not in names]
    memory = getattr(networks, "networks_in_memory", None)
    if memory is not None:
        for name in list(memory):
            if names is None or name in names:
                memory.pop(name, None)


def a1111_stale_networks() -> set[str]:
    """Names the extension holds in memory whose file changed on disk since it was read
    (`Network.mtime`, `network_on_disk.filename`) or is gone."""
    networks = lora_extension()
    if networks is None:
        return set()
    held = list(getattr(networks, "networks_in_memory", {}).values()) + list(getattr(networks, "loaded_networks", []))
    stale = set()
    for net in held:
        path = getattr(getattr(net, "network_on_disk", None), "filename", None)
        try:
            if path is None or os.path.getmtime(path) != getattr(net, "mtime", None):
                stale.add(net.name)
        except OSError:
            stale.add(net.name)
    return stale


def refresh_lora_list() -> None:
    """networks.list_available_networks(): rescan the Lora folder (the Lora tab's refresh, §4.1)."""
    networks = lora_extension()
    if networks is not None:
        networks.list_available_networks()


# networks.load_networks skips its work when `current_lora_hash` equals the hash of the prompt's
# LoRAs (`str([])` for none): this value equals no such hash, so the next generation starts again
# from `forge_objects_original` and applies what its prompt names (also nothing).
FORGE_REAPPLY_LORAS = "lora-studio: re-apply LoRAs"


def forge_forget_loras(sd_model: Any) -> None:
    """Forge (§4.9): clear the `load_lora_state_dict` lru_cache (keyed by path, so an overwritten
    file would not be re-read) and make the next generation re-apply its LoRAs. Not `str([])`:
    that means "no LoRA applied", so a next prompt without one would keep the patched
    `forge_objects` of the last prompt with one."""
    networks = lora_extension()
    cached = getattr(networks, "load_lora_state_dict", None) if networks is not None else None
    if cached is not None and hasattr(cached, "cache_clear"):
        cached.cache_clear()
    if sd_model is not None and hasattr(sd_model, "current_lora_hash"):
        sd_model.current_lora_hash = FORGE_REAPPLY_LORAS


def forge_unload_all() -> None:
    """backend/memory_management.py unload_all_models + soft_empty_cache: Forge's copy of the model
    leaves the GPU; Forge loads it again when it next generates."""
    from backend import memory_management

    memory_management.unload_all_models()
    memory_management.soft_empty_cache()


# ---- 4. generation and captions (§5.2, §5.4, §6.4) --------------------------------------------


def txt2img(prompt: str, negative_prompt: str, seed: int, steps: int, cfg_scale: float, width: int, height: int,
            sampler_name: str, scheduler: str, batch_size: int) -> tuple[list[Image.Image], list[str]]:
    """One txt2img run through the WebUI's own pipeline: modules/processing.py
    StableDiffusionProcessingTxt2Img + process_images. Nothing is saved; always-on scripts are left
    out (`scripts` None); `sd_lora` ("Add network to prompt") is off for the run. Returns the images
    and their infotexts. The caller holds the queue lock (process_images does not take it)."""
    from modules import processing

    s = shared()
    opts = s.opts
    p = processing.StableDiffusionProcessingTxt2Img(
        sd_model=loaded_model(),
        outpath_samples=getattr(opts, "outdir_samples", "") or getattr(opts, "outdir_txt2img_samples", ""),
        outpath_grids=getattr(opts, "outdir_grids", "") or getattr(opts, "outdir_txt2img_grids", ""),
        prompt=prompt, negative_prompt=negative_prompt, seed=seed, steps=steps, cfg_scale=cfg_scale,
        width=width, height=height, sampler_name=sampler_name, scheduler=scheduler,
        batch_size=batch_size, n_iter=1, do_not_save_samples=True, do_not_save_grid=True,
        override_settings={"sd_lora": "None"},
    )
    with contextlib.closing(p):
        processed = run_on_main_thread(processing.process_images, p)
    images = list(processed.images)[:batch_size]
    return images, list(processed.infotexts)[: len(images)]


def run_on_main_thread(fn, *args):
    """Forge runs generation on its main thread (modules_forge/main_thread.py run_and_wait_result,
    as modules/txt2img.py does); A1111 (and a caller already on the main thread) calls in place.
    Forge's task prints an exception and returns None; here it is raised in the caller."""
    import threading

    try:
        from modules_forge import main_thread
    except ImportError:
        return fn(*args)
    if threading.current_thread() is threading.main_thread():
        return fn(*args)
    outcome: dict[str, Any] = {}

    def call():
        try:
            outcome["result"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 (handed to the caller's thread)
            outcome["error"] = e

    main_thread.run_and_wait_result(call)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def clear_prompt_cache() -> None:
    """The conditioning cache is class-level and keyed by prompt text (§5.2 step 6): reset it so a
    text encoder changed in place is read again (A1111 `cached_c/cached_uc`; Forge clear_prompt_cache)."""
    from modules import processing

    cls = processing.StableDiffusionProcessing
    for name in ("cached_c", "cached_uc"):
        cache = getattr(cls, name, None)
        if isinstance(cache, list) and cache:
            cache[0] = None


def has_blip() -> bool:
    """Whether the WebUI has its BLIP interrogator (Forge Neo removed modules/interrogate.py)."""
    import importlib.util

    try:
        return importlib.util.find_spec("modules.interrogate") is not None
    except (ImportError, ValueError):
        return False


def blip_captions(images: list[Image.Image]) -> list[str]:
    """A caption per image from the WebUI's BLIP (modules/interrogate.py InterrogateModels:
    load_blip_model, generate_caption, send_blip_to_ram). Only BLIP is loaded: `interrogate()` would
    also load the CLIP ranking model (a download) for artist/flavour terms we do not want. The
    interrogator's `dtype` is set for BLIP and put back after."""
    from modules import devices

    s = shared()
    it = getattr(s, "interrogator", None)
    if it is None or not has_blip():
        raise StudioError("This WebUI has no BLIP captioner (Forge Neo does not ship modules/interrogate.py).",
                          "Pick the CoCa photo captioner in the Dataset tab.")
    old_dtype = getattr(it, "dtype", None)
    try:
        if it.blip_model is None:
            it.blip_model = it.load_blip_model()
            if not cmd_flag("no_half") and not getattr(it, "running_on_cpu", False):
                it.blip_model = it.blip_model.half()
        it.blip_model = it.blip_model.to(devices.device_interrogate)
        it.dtype = next(it.blip_model.parameters()).dtype
        return [str(it.generate_caption(img.convert("RGB"))) for img in images]
    finally:
        it.dtype = old_dtype
        it.send_blip_to_ram()
        devices.torch_gc()


# ---- 5. the WebUI's UI ------------------------------------------------------------------------


def add_send_to_txt2img(source_text: Any) -> Any:
    """The WebUI's own "Send to txt2img" button (modules/infotext_utils.py create_buttons +
    register_paste_params_button; `generation_parameters_copypaste` before A1111 1.8), pasting the
    parameters text of `source_text`: the WebUI connects it after every tab is built
    (ui.create_ui -> connect_paste_params_buttons) and switches to txt2img (switch_to_txt2img)."""
    try:
        from modules import infotext_utils as paste
    except ImportError:
        try:
            from modules import generation_parameters_copypaste as paste
        except ImportError:  # a WebUI without either: no button; the parameters can still be copied
            return None

    button = paste.create_buttons(["txt2img"])["txt2img"]
    paste.register_paste_params_button(paste.ParamBinding(paste_button=button, tabname="txt2img",
                                                          source_text_component=source_text))
    return button
