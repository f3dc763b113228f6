"""StandaloneHost: a checkpoint file, our model code and our sampler (CLI, standalone UI, tests).

The checkpoint is loaded on first use and kept. `generate` speaks the WebUI's prompt language:
`<lora:NAME>`, `<lora:NAME:W>` and `<lora:NAME:TE:UNET>` (also spelled `<lyco:...>`, with named
`te=` / `unet=`) are removed from the prompt text, NAME is looked up as `NAME.safetensors` in the
LoRA folders (recursively, as the WebUI does), and the files are applied at those weights through
the network package for that one image, then taken off again (forward hooks: the checkpoint's
tensors are never written to). `dyn=` and other extra-network types (`<hypernet:...>`) are
removed from the text and ignored, with a line in the job log. Tags in the negative prompt stay
there as text (A1111 reads extra networks from the positive prompt only). Both prompts are read
with A1111's default emphasis ("Original", models/prompt_weights.py): `(word)` x1.1, `[word]` /1.1,
`(word:1.3)`, nesting, `BREAK` (a new 75-token chunk), and the escapes `\\(` `\\)` `\\[` `\\]` `\\\\`
for literal brackets, so booru tags written for the WebUI (`name \\(series\\)`) mean the same
caption text here and a standalone grid matches the WebUI's. Not done: comma backtracking at chunk
borders (chunks are plain 75-token cuts) and textual-inversion embeddings.
"""

from __future__ import annotations

import contextlib
import difflib
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StudioError
from ..progress import CancelToken, ProgressEvent, ProgressFn, no_progress
from .base import (
    INFOTEXT_KEY,
    BorrowRequest,
    GenerationRequest,
    Host,
    LoraTag,
    checkpoint_defaults,
    parse_lora_tags,
    restored_module_modes,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..models.bundle import ModelBundle
    from ..project import Project

LORA_SUFFIX = ".safetensors"

_ESCAPED = re.compile(r"\\([()\[\]\\])")


def unescape_prompt(text: str) -> str:
    """`\\(` -> `(` and friends: the WebUI's escapes for literal brackets. (generate itself leaves
    escapes to the emphasis parser, which reads them the same way inside weighted text.)"""
    return _ESCAPED.sub(r"\1", text)


def scheduler_key(label: str, sampler_name: str) -> str:
    """A WebUI "Schedule type" label -> our scheduler key. "Automatic" is what A1111 picks for the
    sampler: Karras for DPM++ 2M, the model's own (uniform) timesteps for Euler and Euler a."""
    key = label.strip().lower()
    if key in ("automatic", ""):
        return "karras" if sampler_name.strip().lower().startswith("dpm++") else "uniform"
    return key


class StandaloneHost(Host):
    """A Host over a checkpoint file.

    checkpoint: an SD1.5 / SDXL single-file checkpoint (.safetensors or .ckpt).
    lora_dirs: folders `<lora:NAME:...>` names are looked up in, first match wins.
    device: None = "cuda" when available, else "cpu".
    dtype: None = float16 on CUDA, float32 on CPU (CPU half precision is slow and lossy).
    clip_skip: SD1.5 only; 2 = the WebUI's "CLIP skip 2".
    """

    name = "standalone"

    def __init__(
        self,
        checkpoint: str | Path,
        lora_dirs: Sequence[str | Path] = (),
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        clip_skip: int = 1,
    ):
        from ..models.checkpoint import checkpoint_file

        self.checkpoint = checkpoint_file(checkpoint)
        self._lora_dirs = [Path(d) for d in lora_dirs]
        self._device = device
        self._dtype = dtype
        self.clip_skip = clip_skip
        self._lock = threading.RLock()  # jobs run in threads; the model is loaded once
        self._bundle: ModelBundle | None = None
        self._arch: str | None = None
        self._model_hash: str | None = None
        self._index: dict[str, Path] | None = None  # LoRA stem -> file

    # ---- the model

    def device_and_dtype(self) -> tuple[torch.device, torch.dtype]:
        import torch

        device = torch.device(self._device if self._device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = self._dtype if self._dtype is not None else (torch.float16 if device.type == "cuda" else torch.float32)
        return device, dtype

    def bundle(self) -> ModelBundle:
        """The loaded model (loaded on the first call, then cached)."""
        with self._lock:
            if self._bundle is None:
                from ..models.bundle import load_bundle

                device, dtype = self.device_and_dtype()
                self._bundle = load_bundle(self.checkpoint, device, dtype, clip_skip=self.clip_skip)
                self._arch = self._bundle.arch
            return self._bundle

    def model_arch(self) -> str:
        with self._lock:
            if self._arch is None:  # the header and shapes tell, without building the model
                from ..models.checkpoint import describe

                self._arch = describe(self.checkpoint)["arch"]
            return self._arch

    def default_generation(self, arch: str | None = None) -> GenerationRequest:
        """The family's defaults at the model's own size (a micro model's 64 px, from its header)."""
        if arch not in (None, self.model_arch()):
            return super().default_generation(arch)
        return checkpoint_defaults(self.checkpoint)

    def model_hash(self) -> str:
        with self._lock:
            if self._model_hash is None:
                from ..models.checkpoint import model_hash

                self._model_hash = model_hash(self.checkpoint)
            return self._model_hash

    @contextlib.contextmanager
    def borrow_bundle(self, request: BorrowRequest | None = None) -> Iterator[ModelBundle]:
        # the memory check is the WebUI's (whose model shares the GPU); here the model is ours alone
        with restored_module_modes(self.bundle()) as bundle:
            yield bundle

    def close(self) -> None:
        with self._lock:
            self._bundle = None
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ---- LoRA files

    def lora_dirs(self) -> list[Path]:
        return list(self._lora_dirs)

    def lora_output_dir(self, project: Project) -> Path:
        return project.output_dir

    def refresh_loras(self) -> None:
        with self._lock:
            self._index = None

    def _scan(self) -> dict[str, Path]:
        index: dict[str, Path] = {}
        for d in self._lora_dirs:
            if not d.is_dir():
                continue
            direct = sorted(d.glob("*" + LORA_SUFFIX))
            deeper = sorted(p for p in d.rglob("*" + LORA_SUFFIX) if p.parent != d)
            for p in direct + deeper:  # a file directly in a folder wins over one in a subfolder
                index.setdefault(p.stem, p)
        return index

    def find_lora(self, name: str) -> Path:
        """The file of `<lora:name:...>`; an unknown name rescans once (a file may be new), then fails."""
        with self._lock:
            if self._index is None or name not in self._index:
                self._index = self._scan()
            path = self._index.get(name)
            if path is not None:
                return path
            close = difflib.get_close_matches(name, list(self._index), n=5, cutoff=0.5)
        where = ", ".join(str(d) for d in self._lora_dirs) or "(no LoRA folders were given)"
        hint = f"Close names: {', '.join(close)}." if close else "Check the name: it is the file name without .safetensors."
        raise StudioError(f"No LoRA named {name!r} ({name}{LORA_SUFFIX}) in {where}.", hint)

    # ---- generation

    def generate(
        self,
        request: GenerationRequest,
        progress: ProgressFn = no_progress,
        cancel: CancelToken | None = None,
    ) -> list[Image.Image]:
        from ..models.sampler import GenerationParams, generate, resolve_sampler

        resolve_sampler(request.sampler_name)  # a typo fails before the model loads
        if request.batch_size < 1:
            raise StudioError(f"Batch size {request.batch_size} makes no images.", "Use 1 or more.")
        text, tags, others = parse_lora_tags(request.prompt)
        for tag in others:
            progress(ProgressEvent(log=f"ignored {tag}: the standalone host applies only <lora:...> tags"))
        files = [(tag, self.find_lora(tag.name)) for tag in tags]
        prompt, negative = text, request.negative_prompt  # escapes are read by the emphasis parser
        scheduler = scheduler_key(request.scheduler, request.sampler_name)
        bundle = self.bundle()
        images = []
        n = request.batch_size
        for i, seed in enumerate(request.seeds()):
            if cancel is not None:
                cancel.raise_if_cancelled()

            def step(event: ProgressEvent, i=i) -> None:
                f = event.fraction
                progress(ProgressEvent((i + f) / n if f is not None else None, event.text, extra=event.extra, log=event.log))

            with self._applied(bundle, files, progress) as hashes:
                image = generate(
                    bundle, prompt, negative, seed, request.steps, request.cfg_scale, request.width, request.height,
                    request.sampler_name, scheduler, progress=step, cancel=cancel, emphasis=True,
                )
            extra = {}
            if self.clip_skip > 1:
                extra["Clip skip"] = str(self.clip_skip)
            if hashes:
                extra["Lora hashes"] = ", ".join(f"{name}: {h}" for name, h in hashes)
            params = GenerationParams(
                prompt=request.prompt, negative=request.negative_prompt, seed=seed, steps=request.steps,
                cfg=request.cfg_scale, width=request.width, height=request.height,
                sampler=request.sampler_name, scheduler=scheduler,
                model_hash=self.model_hash(), model_name=self.checkpoint.stem, extra=extra,
            )
            image.info[INFOTEXT_KEY] = params.infotext()
            images.append(image)
        return images

    @contextlib.contextmanager
    def _applied(
        self, bundle: ModelBundle, files: list[tuple[LoraTag, Path]], progress: ProgressFn
    ) -> Iterator[list[tuple[str, str]]]:
        """Apply the prompt's LoRAs for one image; yields (name, short hash) for the infotext."""
        if not files:
            yield []
            return
        from ..network.io import apply_loras

        # Hooks, not merging: the TE and UNet strengths can then differ per part of one file.
        with apply_loras(bundle, [(path, tag.te) for tag, path in files], mode="hooks", progress=progress) as applied:
            for (tag, _), a in zip(files, applied):
                if tag.unet != tag.te:
                    a.network.set_multiplier(tag.unet, "unet")
            yield [(tag.name, (a.model_hash or "")[:12]) for (tag, _), a in zip(files, applied) if a.model_hash]
