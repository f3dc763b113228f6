"""LoRA Studio: make a dataset, train a LoRA or LoCon, compare its epochs.

Runs inside the AUTOMATIC1111 / Forge WebUIs (scripts/lora_studio.py) and standalone
(`python -m lora_trainer`). Importing this package does no work: no torch, no gradio.
"""

__version__ = "0.1.0"
