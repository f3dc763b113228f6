"""WebUIHost: the model AUTOMATIC1111 1.10 or Forge has loaded, lent to training, and the WebUI's own
pipeline for samples, grids and captions.

Borrowing (see shared/DESIGN.md "ModelBundle"): our module code is built over the WebUI's tensors
(`bundle_from_state_dict` on the modules' state dicts, keys normalised to single-file names), so
nothing is copied on AUTOMATIC1111 and nothing of the WebUI runs during training. Around that, in
order, each undone in `finally`:

1. the WebUI's queue lock is held (no txt2img, API call or checkpoint switch interleaves), and
   `shared.state` shows the job, its steps and text, so the WebUI's progress and Interrupt work;
2. AUTOMATIC1111: `--lowvram` and FP8 weights are refused; a LoRA an earlier generation merged into
   the weights is taken out (the built-in Lora extension leaves it merged, webui-host.md §2.8/§4.7);
   loaded hypernetworks are dropped; with --medvram the parts are put on the GPU;
   Forge: quantized UNets are refused; Forge's own copy leaves the GPU and clean (un-merged) weights
   are cloned outside inference mode, since Forge's inference tensors can not be saved for
   backward (§6.2);
3. free GPU memory is checked by the trainer's own estimate (BorrowRequest.memory_check,
   train/memory.py), with a sentence that says what to change when it will not fit;
4. after latents are cached, the VAE is parked on the CPU (taken back for sample images);
5. afterwards the WebUI's modules get back their tensors' devices and dtypes, their train/eval
   modes and requires_grad flags exactly as they were.

Epoch files are announced to the WebUI: the Lora list is rescanned, a `<stem>.json` with the
activation text and preferred weight is written beside each file (the Lora extension's user
metadata), and the extension's in-memory copy of a file a new run overwrote is dropped.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StudioError
from ..fileio import write_text
from ..progress import CancelToken, ProgressEvent, ProgressFn, no_progress
from . import webui_compat as W
from .base import BorrowRequest, GenerationRequest, Host, SavedLora, restored_module_modes

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..jobs import JobFn
    from ..models.bundle import ModelBundle
    from ..project import Project
    from ..train.config import TrainConfig

TRAIN_JOB = "lora-studio-train"

# ---- 1. how much GPU memory a run needs -------------------------------------------------------


# ---- 2. putting the WebUI's modules back exactly ---------------------------------------------


@contextlib.contextmanager
def restored_webui_modules(modules: list[Any], tensors: bool = True) -> Iterator[None]:
    """Record every parameter's and buffer's object, device, dtype and requires_grad and every
    submodule's train/eval mode under `modules`; put them all back on exit (any exit).

    tensors=False (Forge) puts back only flags and modes: Forge's memory manager and LoRA loader
    replace and move its parameters themselves and keep books about them."""
    params, buffers, modes = [], [], []
    for root in modules:
        for m in root.modules():
            modes.append((m, m.training))
            for name, p in m._parameters.items():
                if p is not None:
                    params.append((m, name, p, p.device, p.dtype, p.requires_grad))
            for name, b in m._buffers.items():
                if b is not None:
                    buffers.append((m, name, b.device, b.dtype))
    try:
        yield
    finally:
        for m, name, p, device, dtype, flag in params:
            if tensors and m._parameters.get(name) is not p:
                m._parameters[name] = p
            if tensors and (p.device != device or p.dtype != dtype):
                p.data = p.data.to(device=device, dtype=dtype)
            if p.requires_grad != flag:  # (an inference tensor refuses even a no-op change)
                p.requires_grad_(flag)
        for m, name, device, dtype in buffers if tensors else ():
            b = m._buffers.get(name)
            if b is not None and (b.device != device or b.dtype != dtype):
                m._buffers[name] = b.to(device=device, dtype=dtype)
        for m, training in modes:
            m.training = training


def tensors_on(modules: list[Any], device: torch.device) -> int:
    """Bytes of the modules' tensors that are on `device`."""
    return sum(t.numel() * t.element_size() for root in modules for t in root.state_dict().values()
               if t.device == device)


# ---- 3. the user metadata card beside each LoRA file -----------------------------------------


def write_user_metadata(lora_file: Path, activation_text: str, arch: str, description: str,
                        preferred_weight: float = 1.0) -> Path:
    """`<stem>.json` beside a LoRA file in the Lora extension's user-metadata format
    (ui_extra_networks_user_metadata / ui_edit_user_metadata.py: "description", "sd version",
    "activation text", "preferred weight", "negative text", "notes"). Fields a user already set
    in the card editor are kept."""
    path = lora_file.with_suffix(".json")
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            data = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            data = {}
    ours = {"description": description, "sd version": "SDXL" if arch == "sdxl" else "SD1",
            "activation text": activation_text, "preferred weight": preferred_weight, "negative text": "", "notes": ""}
    for key, value in ours.items():
        if not data.get(key):
            data[key] = value
    write_text(path, json.dumps(data, indent=4, ensure_ascii=False) + "\n")
    return path


# ---- 4. the host -----------------------------------------------------------------------------


@dataclass
class Session:
    """What a job running through `WebUIHost.wrap_job` tells the host."""

    title: str
    cancel: CancelToken | None = None
    config: TrainConfig | None = None
    project: Project | None = None
    progress: ProgressFn = no_progress


class WebUIHost(Host):
    """The Host inside AUTOMATIC1111 1.10 / Forge (`name` says which).

    device: where training runs (None = the WebUI's device). free_vram: bytes free on a device
    (None = torch.cuda.mem_get_info; tests pass their own). park_device: where the VAE waits.
    """

    def __init__(self, device: str | torch.device | None = None,
                 free_vram: Callable[[torch.device], int] | None = None, park_device: str = "cpu"):
        self._device = device
        self._free_vram = free_vram
        self._park_device = park_device
        self._owner: int | None = None  # the thread holding the queue lock through us
        self._local = threading.local()
        self._borrow: _Borrow | None = None
        # From the installed packages: reading shared.sd_model here would load a checkpoint.
        self.name = W.host_kind(None)

    # ---- the queue lock and shared.state

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the WebUI's queue lock (not re-entrant): a nested call in the same thread passes."""
        me = threading.get_ident()
        if self._owner == me:
            yield
            return
        lock = W.queue_lock()
        with lock:
            self._owner = me
            try:
                yield
            finally:
                self._owner = None

    @property
    def session(self) -> Session | None:
        return getattr(self._local, "session", None)

    def wrap_job(self, title: str, fn: JobFn, config: TrainConfig | None = None, project: Project | None = None) -> JobFn:
        """A job function that runs `fn` holding the queue lock with `shared.state` driven: the job's
        events set job_no / job_count / textinfo, the WebUI's Interrupt cancels the job, and a
        cancel from the studio interrupts a generation in progress. `config` enables the GPU-memory
        check and VAE parking; `project` names the job's project (the trainer tells the host each
        saved epoch itself: on_lora_saved)."""

        def run(progress: ProgressFn, cancel: CancelToken):
            session = Session(title, cancel, config, project, progress)
            with self.locked(), self._state(session):
                self._local.session = session
                try:
                    return fn(self._bridge(session), cancel)
                finally:
                    self._local.session = None

        return run

    @contextlib.contextmanager
    def _state(self, session: Session) -> Iterator[None]:
        state = W.state()
        task = f"task({TRAIN_JOB}-{int(time.time() * 1000)})"
        state.begin(job=task)
        state.job_count = 1000
        state.textinfo = session.title
        try:
            with W.progress_task(task):
                yield
        finally:
            state.end()
            state.interrupted = False

    def _bridge(self, session: Session) -> ProgressFn:
        state = W.state()

        def progress(event: ProgressEvent) -> None:
            if state.interrupted and session.cancel is not None and not session.cancel.cancelled:
                session.cancel.cancel()  # the WebUI's Interrupt button
            if session.cancel is not None and session.cancel.cancelled:
                state.interrupted = True  # a generation in progress stops too
            extra = event.extra or {}
            total, step = extra.get("total_steps"), extra.get("step")
            if isinstance(total, int) and isinstance(step, int):
                state.job_count, state.job_no = total, step
            elif event.fraction is not None:
                state.job_count, state.job_no = 1000, int(event.fraction * 1000)
            state.sampling_step, state.sampling_steps = state.job_no, max(1, state.job_count)
            if event.text:
                state.textinfo = f"{session.title}: {event.text}"
            session.progress(event)

        return progress

    # ---- the model

    def model_arch(self) -> str:
        with self.locked():
            sd_model = W.shared().sd_model
            if not hasattr(sd_model, "forge_objects") and W.host_kind(sd_model) == W.FORGE:
                arch = W.forge_selected_arch()  # not loaded yet: the file's header tells
                if arch is not None:
                    return arch
            return W.model_arch(W.loaded_model())

    def device(self) -> torch.device:
        import torch

        return torch.device(self._device) if self._device is not None else W.training_device(self.name)

    @contextlib.contextmanager
    def borrow_bundle(self, request: BorrowRequest | None = None) -> Iterator[ModelBundle]:
        self._request = request or BorrowRequest()
        with self.locked():
            sd_model = W.loaded_model()
            kind = W.host_kind(sd_model)
            self.name = kind
            unsupported = W.unsupported_forge() if kind == W.FORGE else None
            if unsupported is not None:
                raise unsupported
            arch = W.model_arch(sd_model)
            parts = W.model_parts(sd_model, kind, arch)
            state = W.state()
            if not state.job:  # borrowed outside wrap_job: still show that the WebUI is busy
                state.job = TRAIN_JOB
            with restored_webui_modules([p.module for p in parts], tensors=kind != W.FORGE):
                if kind == W.FORGE:
                    borrow = _ForgeBorrow(self, sd_model, arch, parts)
                else:
                    borrow = _A1111Borrow(self, sd_model, arch, parts)
                with borrow.lent() as bundle, restored_module_modes(bundle):
                    self._borrow = borrow
                    try:
                        yield bundle
                    finally:
                        self._borrow = None

    def check_vram(self, arch: str, resident: int) -> None:
        """Refuse a run that will not fit: the borrower's memory check, told what is free on the
        device and how much of the model is already there (only on CUDA)."""
        import torch

        check = getattr(self, "_request", BorrowRequest()).memory_check
        device = self.device()
        if check is None or device.type != "cuda":
            return
        free = self._free_vram(device) if self._free_vram is not None else torch.cuda.mem_get_info(device)[0]
        problem = check(arch, free, resident, str(device))
        if problem is not None:
            raise problem

    # ---- LoRA files

    def lora_dirs(self) -> list[Path]:
        from .webui_settings import lora_dir

        return [lora_dir()]

    def lora_output_dir(self, project: Project) -> Path:
        from .webui_settings import lora_dir

        return lora_dir() / project.name

    def refresh_loras(self) -> None:
        """Rescan the Lora folder and drop what the Lora extension holds of files changed on disk
        (a re-run overwrites `<stem>-NN.safetensors`, and A1111 would keep the old delta merged)."""
        with self.locked():
            sd_model = W.loaded_model()
            if W.host_kind(sd_model) == W.FORGE:
                W.forge_forget_loras(sd_model)
            else:
                stale = W.a1111_stale_networks()
                if stale:
                    roots = [p.module for p in W.model_parts(sd_model, W.A1111, W.model_arch(sd_model))]
                    W.a1111_unmerge(roots, stale)
                    W.a1111_forget_networks(stale)
            W.refresh_lora_list()

    def on_lora_saved(self, saved: SavedLora) -> None:
        """A user-metadata card beside the new epoch file (the Lora tab shows its activation text;
        a card the user edited keeps their fields), then a rescan so the file is usable at once."""
        if not saved.path.with_suffix(".json").is_file():
            write_user_metadata(saved.path, saved.activation_text, saved.arch,
                                f"LoRA Studio: {saved.project_name}, {saved.path.stem}")
        self.refresh_loras()

    # ---- generation

    def generate(self, request: GenerationRequest, progress: ProgressFn = no_progress,
                 cancel: CancelToken | None = None) -> list[Image.Image]:
        from .base import INFOTEXT_KEY

        if request.batch_size < 1:
            raise StudioError(f"Batch size {request.batch_size} makes no images.", "Use 1 or more.")
        if cancel is not None:
            cancel.raise_if_cancelled()
        with self.locked():
            borrow = self._borrow
            with borrow.generating() if borrow is not None else contextlib.nullcontext():
                progress(ProgressEvent(0.0, f"generating {request.batch_size} image(s)"))
                images, infotexts = W.txt2img(
                    request.prompt, request.negative_prompt, request.seed, request.steps, request.cfg_scale,
                    request.width, request.height, request.sampler_name, request.scheduler, request.batch_size)
        if cancel is not None:
            cancel.raise_if_cancelled()
        if not images:
            raise StudioError("The WebUI made no image (the generation was interrupted or failed).",
                              "See the WebUI's console for the error, then try again.")
        for image, text in zip(images, infotexts):
            image.info[INFOTEXT_KEY] = text
        progress(ProgressEvent(1.0, "generated"))
        return images

    def caption_fn(self) -> Callable[[list[Image.Image]], list[str]]:
        """Captions from the WebUI's BLIP, for the Dataset tab (`ctx.extra["caption_fn"]`)."""

        def caption(images: list[Image.Image]) -> list[str]:
            with self.locked():
                return W.blip_captions(images)

        return caption


# ---- 5. what borrowing does on each WebUI ----------------------------------------------------


class _Borrow:
    """One lending of the loaded model: builds the bundle, parks the VAE, survives generations."""

    def __init__(self, host: WebUIHost, sd_model: Any, arch: str, parts: list[W.Part]):
        self.host, self.sd_model, self.arch, self.parts = host, sd_model, arch, parts
        self.bundle: ModelBundle | None = None
        self.vae_parked = False
        self._hooks: list[Any] = []

    @property
    def modules(self) -> list[Any]:
        return [p.module for p in self.parts]

    def vae_part(self) -> W.Part:
        return next(p for p in self.parts if p.prefix == "first_stage_model.")

    def tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def build(self) -> ModelBundle:
        from ..models.bundle import bundle_from_state_dict

        clip_skip = int(getattr(W.shared().opts, "CLIP_stop_at_last_layers", 1) or 1) if self.arch == "sd15" else 1
        return bundle_from_state_dict(self.tensors(), name=W.model_name(self.sd_model),
                                      prediction=W.prediction(self.sd_model, self.host.name), clip_skip=clip_skip)

    def rebind(self) -> None:
        """Point our modules at the WebUI's tensors again (after the WebUI moved or replaced them)."""
        fresh = self.build()
        for name, ours in self.bundle.modules().items():
            ours.load_state_dict(fresh.modules()[name].state_dict(), assign=True)

    @contextlib.contextmanager
    def lent(self) -> Iterator[ModelBundle]:
        """The bundle for one training: refused with a sentence when the model can not be trained,
        the WebUI's state readied (`prepare`), VRAM checked, and on every exit `give_back`."""
        self.refuse()
        in_use = self.prepare()
        self.host.check_vram(self.arch, in_use)
        self.bundle = self.build()
        self.park_after_caching()
        try:
            yield self.bundle
        finally:
            self.remove_hooks()
            self.bundle = None
            self.give_back()

    def refuse(self) -> None:
        """Raise a StudioError when the loaded model can not be trained."""

    def prepare(self) -> int:
        """Ready the WebUI's model for lending; returns the bytes of it already on the training device."""
        return 0

    def give_back(self) -> None:
        """After the lending, on every exit path."""

    def park_after_caching(self) -> None:
        """Park the VAE at the first training step (a UNet forward with grad on), when the run
        caches latents: until then it encodes the dataset."""
        session = self.host.session
        if session is None or session.config is None or not session.config.cache_latents:
            return
        import torch

        def first_step(module, args):
            if torch.is_grad_enabled() and not self.vae_parked:
                self.park_vae()
                for h in self._hooks:
                    h.remove()
                self._hooks.clear()

        self._hooks.append(self.bundle.unet.register_forward_pre_hook(first_step))

    def park_vae(self) -> None:
        self._move_vae(self.host._park_device)
        self.vae_parked = True

    def unpark_vae(self) -> None:
        self._move_vae(self.host.device())
        self.vae_parked = False

    def _move_vae(self, device) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def generating(self) -> Iterator[None]:
        """Around a WebUI generation during training: the VAE comes back, and afterwards the
        LoRA the generation merged is taken out and our modules follow the WebUI's tensors."""
        parked = self.vae_parked
        if parked:
            self.unpark_vae()
        try:
            yield
        finally:
            self.after_generation()
            if parked:
                self.park_vae()

    def after_generation(self) -> None:
        pass

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()


class _A1111Borrow(_Borrow):
    def tensors(self) -> dict[str, torch.Tensor]:
        return W.borrowed_tensors(self.parts)

    def refuse(self) -> None:
        import torch

        name = W.model_name(self.sd_model)
        if W.cmd_flag("lowvram"):
            raise StudioError(
                "Training on the loaded model does not work with --lowvram (the WebUI keeps the model on the CPU "
                "and moves single blocks to the GPU); AUTOMATIC1111's own trainers refuse it too.",
                "Restart the WebUI without --lowvram (--medvram is fine), or train standalone.")
        fp8 = [getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)]
        if any(p.dtype in fp8 for p in self.parts[0].module.parameters()):
            raise StudioError(f"The loaded model {name} is stored in FP8 (Settings > Optimizations > FP8 weight), "
                              "which can not be trained.", "Set FP8 weight to Disable, apply, and start again.")
        conditioning = getattr(getattr(self.sd_model, "model", None), "conditioning_key", "crossattn")
        if conditioning in ("hybrid", "concat"):
            raise StudioError(f"The loaded model {name} is an inpainting or instruct model.",
                              "Load a regular SD1.5 or SDXL checkpoint to train.")

    def ensure_on_device(self) -> None:
        """--medvram keeps the UNet and text encoders on the CPU between uses: put the parts the
        trainer uses on the training device (restored_webui_modules moves them back)."""
        device = self.host.device()
        for part in self.parts:
            if part is self.vae_part() and self.vae_parked:
                continue
            if any(t.device != device for t in part.module.state_dict().values()):
                part.module.to(device)

    def prepare(self) -> int:
        W.a1111_unmerge(self.modules)
        networks = W.lora_extension()
        if networks is not None and getattr(networks, "loaded_networks", None):
            networks.loaded_networks.clear()  # a stray forward would merge them again
        W.drop_hypernetworks()
        if W.medvram_active(self.sd_model):
            self.ensure_on_device()
        return tensors_on(self.modules, self.host.device())

    def give_back(self) -> None:
        W.torch_gc()

    def _move_vae(self, device) -> None:
        self.vae_part().module.to(device)
        self.rebind_vae()

    def rebind_vae(self) -> None:
        from ..models import checkpoint as ckpt

        vae_sd = {k: v for k, v in ckpt.part(self.tensors(), ckpt.VAE_PREFIX).items() if not k.startswith("loss.")}
        self.bundle.vae.load_state_dict(vae_sd, assign=True)

    def after_generation(self) -> None:
        W.a1111_unmerge(self.modules)  # the sample's <lora:...> was merged into the shared tensors
        networks = W.lora_extension()
        if networks is not None and getattr(networks, "loaded_networks", None):
            networks.loaded_networks.clear()
        if W.medvram_active(self.sd_model):
            self.ensure_on_device()
        self.rebind()
        W.clear_prompt_cache()


class _ForgeBorrow(_Borrow):
    """Forge: clean clones outside inference mode on the training device; Forge's copy off the GPU."""

    def refuse(self) -> None:
        quant = W.forge_quantization(self.sd_model)
        if quant:
            raise StudioError(
                f"The loaded model {W.model_name(self.sd_model)} is stored quantized ({quant}) by Forge. Training needs "
                "its full fp16/bf16 weights: gradients can not flow through NF4, GGUF or fp8 storage.",
                "Load the fp16 (or bf16) version of the checkpoint, with Forge's 'Diffusion in Low Bits' set to "
                "Automatic, and start again.")

    def tensors(self) -> dict[str, torch.Tensor]:
        import torch

        from ..models import checkpoint as ckpt
        from ..models.clip_text import hf_to_open_clip

        device = self.host.device()
        # Forge keeps its text encoders in fp16 even on the CPU (memory_management.text_encoder_dtype),
        # where there is no fp16 autocast: the CPU trains in float32, so the clones are float32 there.
        cpu_float = torch.float32 if device.type == "cpu" else None
        out: dict[str, torch.Tensor] = {}
        with torch.inference_mode(False), torch.no_grad():
            for part in self.parts:
                clean = W.forge_clean_sources(self.sd_model, part)
                for key, t in part.module.state_dict().items():
                    src = clean.get(key, t)
                    dtype = cpu_float if src.is_floating_point() else None
                    # a new tensor made outside inference mode: autograd may save it for backward
                    out[part.prefix + W.normalize_webui_key(key)] = src.to(device=device, dtype=dtype, copy=True)
            hf = {k[len(W.FORGE_BIGG_HF_PREFIX):]: out.pop(k) for k in list(out) if k.startswith(W.FORGE_BIGG_HF_PREFIX)}
            if hf:
                hf.pop("text_model.embeddings.position_ids", None)
                cfg = ckpt.infer_clip_config(hf, "gelu")
                out.update(hf_to_open_clip(hf, cfg, ckpt.SDXL_TE2_PREFIX))
        return out

    def prepare(self) -> int:
        W.forge_unload_all()  # Forge's own copy leaves the GPU; ours are clones
        return 0

    def give_back(self) -> None:
        W.forge_forget_loras(self.sd_model)
        W.forge_unload_all()

    def _move_vae(self, device) -> None:
        self.bundle.vae.to(device)  # our own clone: Forge's VAE is untouched

    def after_generation(self) -> None:
        W.clear_prompt_cache()

