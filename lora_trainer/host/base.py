"""The Host: where the model lives and images are generated.

Two hosts implement this one interface: `StandaloneHost` (host/standalone.py: a checkpoint file,
our model code, our sampler) and the WebUI host (host/webui.py: the model AUTOMATIC1111 or Forge
has loaded, its own pipeline). The trainer (sample images), Compare (grids) and the UI call only
what is here, so everything above the Host is the same code in both.

A request is what a user types into txt2img, in the WebUI's language: sampler names such as
"DPM++ 2M", scheduler labels such as "Karras", and `<lora:NAME:WEIGHT>` tags in the prompt, which
each host resolves against its own LoRA folders (`lora_dirs()`).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..progress import CancelToken, ProgressFn, no_progress

if TYPE_CHECKING:
    from PIL import Image

    from ..errors import StudioError
    from ..models.bundle import ModelBundle
    from ..project import Project

HOST_NAMES = ("standalone", "a1111", "forge")
ARCHES = ("sd15", "sdxl")

# The PNG text chunk (and `Image.info` key) that carries the WebUI's generation parameters.
INFOTEXT_KEY = "parameters"


@dataclass(frozen=True)
class GenerationRequest:
    """One txt2img job, as the WebUI's txt2img tab would take it.

    `prompt` may contain `<lora:NAME:WEIGHT>` tags (NAME = a LoRA file's stem in the host's LoRA
    folders), exactly as typed in the WebUI. `batch_size` images are made with seeds seed,
    seed + 1, ... (the WebUI's rule), so one image per request is `batch_size=1`.
    """

    prompt: str
    negative_prompt: str = ""
    seed: int = 1  # a fixed seed: the same request gives the same image
    steps: int = 20  # the guide's sampling steps
    cfg_scale: float = 7.0  # the WebUI's default CFG scale
    width: int = 512  # SD1.5's training size; SDXL uses 1024 (see default_generation)
    height: int = 512
    sampler_name: str = "DPM++ 2M"  # a WebUI sampler name
    scheduler: str = "Karras"  # a WebUI "Schedule type" label; "Automatic" lets the host choose
    batch_size: int = 1

    def replace(self, **changes) -> GenerationRequest:
        return dataclasses.replace(self, **changes)

    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.batch_size)]

    def infotext(self) -> str:
        """The WebUI's parameters text of this request (of its first image): pasted into txt2img
        (its "Send to txt2img"), it fills the prompt with its LoRA tags, seed, steps, sampler,
        schedule type, CFG and size."""
        from ..infotext import format_infotext, number

        pairs = [("Steps", str(self.steps)), ("Sampler", self.sampler_name), ("Schedule type", self.scheduler),
                 ("CFG scale", number(self.cfg_scale)), ("Seed", str(self.seed)), ("Size", f"{self.width}x{self.height}")]
        return format_infotext(self.prompt, self.negative_prompt, pairs)


def default_generation(arch: str, size: tuple[int, int] | None = None) -> GenerationRequest:
    """The defaults of an architecture: SD1.5 512x512, SDXL 1024x1024 (or the model's own `size`,
    models.checkpoint.native_size); 20 steps, CFG 7, DPM++ 2M Karras."""
    if arch not in ARCHES:
        from ..errors import StudioError

        raise StudioError(f"Unknown architecture {arch!r}.", f"Use one of: {', '.join(ARCHES)}.")
    from ..models.checkpoint import native_size

    width, height = size or native_size(arch)
    return GenerationRequest(prompt="", width=width, height=height)


def checkpoint_defaults(path: str | Path) -> GenerationRequest:
    """default_generation of a checkpoint file, read from its header and shapes alone (its family,
    and its own size when the header gives one) without building the model."""
    from ..models.checkpoint import describe, native_size

    info = describe(path)
    return default_generation(info["arch"], native_size(info["arch"], info["metadata"]))


def infotext_of(image: Image.Image) -> str:
    """The generation parameters a host attached to an image ("" when none)."""
    return str(image.info.get(INFOTEXT_KEY, ""))


@dataclass(frozen=True)
class BorrowRequest:
    """What a borrower of the host's model tells the host it needs.

    memory_check(arch, free, resident, where): the borrower's own verdict on the device's memory
    (`free` bytes free now, `resident` bytes of the model already there), a StudioError when the
    run will not fit; the host asks it once the model's family is known, before anything moves to
    the device. None: nothing to check."""

    memory_check: Callable[[str, int, int, str], StudioError | None] | None = None


@dataclass(frozen=True)
class SavedLora:
    """What a host is told when training has written an epoch file (Host.on_lora_saved)."""

    path: Path
    project_name: str
    arch: str  # "sd15" | "sdxl"
    activation_text: str  # the dataset's leading tags, as a prompt writes them ("" if none)


class Host(abc.ABC):
    """The interface every host implements. Methods may raise StudioError (a user can fix it) and
    Cancelled (the CancelToken was set); anything else is a bug."""

    name: str  # "standalone" | "a1111" | "forge"

    @abc.abstractmethod
    def model_arch(self) -> str:
        """The architecture of the model images are made with: "sd15" | "sdxl"."""

    @abc.abstractmethod
    def borrow_bundle(self, request: BorrowRequest | None = None) -> contextlib.AbstractContextManager[ModelBundle]:
        """A context manager lending the model as a ModelBundle for training.

        Standalone: the loaded checkpoint. WebUI: our modules over the WebUI's loaded tensors.
        Whatever the host changed to lend it is restored on every exit path.
        """

    @abc.abstractmethod
    def generate(
        self,
        request: GenerationRequest,
        progress: ProgressFn = no_progress,
        cancel: CancelToken | None = None,
    ) -> list[Image.Image]:
        """`request.batch_size` images, each with its infotext in `image.info["parameters"]`.

        `<lora:...>` tags in the prompt are applied for this request only. A LoRA named in the
        prompt that the host can not find is a StudioError naming it.
        """

    @abc.abstractmethod
    def lora_dirs(self) -> list[Path]:
        """The folders `<lora:NAME:...>` names are looked up in (recursively)."""

    @abc.abstractmethod
    def lora_output_dir(self, project: Project) -> Path:
        """Where training writes a project's LoRA files.

        Standalone: `<project>/output`. WebUI: `<the WebUI's Lora folder>/<project name>/`, so each
        saved epoch is usable as `<lora:<stem>-NN:w>` at once.
        """

    @abc.abstractmethod
    def refresh_loras(self) -> None:
        """Make files written since the last look (a new epoch) known to `generate`."""

    def on_lora_saved(self, saved: SavedLora) -> None:
        """Training wrote `saved.path`: make it usable at once (samples of this epoch use it next)."""
        self.refresh_loras()

    def default_generation(self, arch: str | None = None) -> GenerationRequest:
        """Per-architecture defaults (of the host's model when `arch` is None)."""
        return default_generation(arch or self.model_arch())

    def close(self) -> None:
        """Free what the host holds (a loaded model); a later call loads it again."""


@contextlib.contextmanager
def restored_module_modes(bundle: ModelBundle) -> Iterator[ModelBundle]:
    """Lend a bundle and put back each module's train/eval mode and every parameter's requires_grad
    afterwards: a trainer turns these on, and generation after it must see the frozen model again."""
    modules = bundle.modules()
    modes = [(m, m.training) for mod in modules.values() for m in mod.modules()]
    grads = [(p, p.requires_grad) for mod in modules.values() for p in mod.parameters()]
    try:
        yield bundle
    finally:
        for m, training in modes:  # per submodule: `.train()` would recurse and lose mixed modes
            m.training = training
        for p, flag in grads:
            p.requires_grad_(flag)


# ---- the WebUI's prompt language: extra-network tags -----------------------------------------

# modules/extra_networks.py: `<type:arg:arg...>`; every match is removed from the prompt text.
EXTRA_NETWORK_RE = re.compile(r"<(\w+):([^>]+)>")
LORA_TYPES = ("lora", "lyco")  # the built-in Lora extension registers both names


@dataclass(frozen=True)
class LoraTag:
    """One `<lora:NAME:TE:UNET>` tag, read as the WebUI's built-in Lora extension reads it.

    `<lora:x>` = weight 1; `<lora:x:0.8>` = 0.8 for both the text encoders and the UNet;
    `<lora:x:1:0.5>` = TE 1, UNet 0.5; named `te=` / `unet=` override the positions.
    """

    name: str  # the file stem
    te: float = 1.0
    unet: float = 1.0
    text: str = ""  # the tag as written


def parse_extra_networks(prompt: str) -> tuple[str, list[tuple[str, list[str], str]]]:
    """(the prompt with every `<type:...>` tag removed, [(type, args split on ':', tag text)])."""
    found: list[tuple[str, list[str], str]] = []

    def take(m: re.Match) -> str:
        found.append((m.group(1), m.group(2).split(":"), m.group(0)))
        return ""

    return EXTRA_NETWORK_RE.sub(take, prompt), found


def lora_tag(args: list[str], text: str) -> LoraTag:
    """A LoraTag from a tag's ':'-split arguments; StudioError for a weight that is no number."""
    from ..errors import StudioError

    positional = [a for a in args if "=" not in a]
    named = dict(a.split("=", 1) for a in args if "=" in a)
    if not positional or not positional[0].strip():
        raise StudioError(f"The tag {text} names no LoRA.", "Write it as <lora:NAME:WEIGHT>.")
    try:
        te = float(named.get("te", positional[1] if len(positional) > 1 else 1.0))
        unet = float(named.get("unet", positional[2] if len(positional) > 2 else te))
    except ValueError:
        raise StudioError(f"The weights in {text} are not numbers.", "Write it as <lora:NAME:0.8> or <lora:NAME:TE:UNET>.") from None
    return LoraTag(positional[0].strip(), te, unet, text)


def parse_lora_tags(prompt: str) -> tuple[str, list[LoraTag], list[str]]:
    """(prompt without extra-network tags, its LoRA tags in order, tags of other types as written)."""
    text, found = parse_extra_networks(prompt)
    loras = [lora_tag(args, tag) for kind, args, tag in found if kind in LORA_TYPES]
    others = [tag for kind, _, tag in found if kind not in LORA_TYPES]
    return text, loras, others
