"""The WebUI's "parameters" text (infotext): what A1111 and Forge write into a PNG and read back
when it is pasted into txt2img (modules/infotext_utils.py `create_infotext` / `quote` /
`parse_generation_parameters`).

    a prompt <lora:name-02:0.8>
    Negative prompt: blurry
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512
"""

from __future__ import annotations

import json
from collections.abc import Iterable


def quote(text: str) -> str:
    """A value as the WebUI writes it: JSON-quoted when it holds a separator."""
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def number(x: float) -> str:
    """7.0 -> "7", 7.5 -> "7.5" (what the WebUI's sliders produce)."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def fields_line(pairs: Iterable[tuple[str, str]]) -> str:
    """`Key: value, Key: value` with each value quoted as the WebUI does."""
    return ", ".join(f"{k}: {quote(v)}" for k, v in pairs)


def format_infotext(prompt: str, negative: str, pairs: Iterable[tuple[str, str]]) -> str:
    """The three parts: the prompt, `Negative prompt:` when there is one, the parameter line."""
    lines = [prompt]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(fields_line(pairs))
    return "\n".join(lines)
