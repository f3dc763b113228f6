"""`modules.processing`: StableDiffusionProcessingTxt2Img and process_images as the WebUI host
calls them. The "image" is a function of the loaded UNet's first conv weight (through the fake Lora
extension, which merges `<lora:NAME:W>` into it) and the seed, so a test sees whether the weights
the WebUI generates with changed. Each call is recorded with the state of the queue lock."""

import re

import numpy as np
import torch
from PIL import Image

calls = []


class StableDiffusionProcessing:
    cached_c = [None, None]  # noqa: RUF012 (class-level in the WebUI too)
    cached_uc = [None, None]  # noqa: RUF012


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    # AUTOMATIC1111 1.10.1 takes these as dataclass fields; an unknown keyword fails as there.
    FIELDS = {"sd_model", "outpath_samples", "outpath_grids", "prompt", "negative_prompt", "seed", "steps", "cfg_scale",
              "width", "height", "sampler_name", "scheduler", "batch_size", "n_iter", "do_not_save_samples",
              "do_not_save_grid", "override_settings"}

    def __init__(self, **kwargs):
        unknown = set(kwargs) - self.FIELDS
        if unknown:
            raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
        self.__dict__.update(kwargs)
        self.closed = False

    def close(self):
        self.closed = True


class Processed:
    def __init__(self, images, infotexts):
        self.images, self.infotexts = images, infotexts


def first_conv(sd_model):
    if hasattr(sd_model, "forge_objects"):
        return sd_model.forge_objects.unet.model.diffusion_model.input_blocks[0][0]
    return sd_model.model.diffusion_model.input_blocks[0][0]


def process_images(p):
    import networks

    from modules import call_queue

    names, weights = [], []
    for name, w in re.findall(r"<lora:([^:>]+):?([^>]*)>", p.prompt):
        names.append(name)
        weights.append(float(w) if w else 1.0)
    networks.load_networks(names, weights, weights)
    layer = first_conv(p.sd_model)
    with torch.no_grad():  # process_images_inner runs under no_grad
        networks.network_apply_weights(layer)
    value = float(layer.weight.detach().double().sum())
    calls.append({"prompt": p.prompt, "locked": call_queue.queue_lock.locked(), "value": value,
                  "grad": torch.is_grad_enabled(), "override_settings": p.override_settings})
    images, infos = [], []
    for i in range(p.batch_size):
        rng = np.random.default_rng(abs(hash((round(value, 9), p.seed + i))) % 2**32)
        images.append(Image.fromarray(rng.integers(0, 255, (p.height // 8, p.width // 8, 3), dtype=np.uint8)))
        infos.append(f"{p.prompt}\nSteps: {p.steps}, Seed: {p.seed + i}, Size: {p.width}x{p.height}")
    return Processed(images, infos)
