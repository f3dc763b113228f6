"""LoRA / LoCon networks in kohya's `networks.lora` format.

    network = create_network(bundle, NetworkConfig(dim=16, alpha=8, conv_dim=8, conv_alpha=4))
    with network.attached():            # train: base tensors untouched, names unchanged
        ...
    save_network(network, "out/name-01.safetensors", LoraMetadata(arch="sd15", epoch=1, ...))

    with apply_loras(bundle, [("a.safetensors", 0.8), ("b.safetensors", 0.5)]):   # generate
        ...

modules.py (one LoRA module), naming.py (kohya targets and keys), network.py (network, config,
attach / merge), metadata.py (header and hashes), io.py (save, read, load, apply), info.py
(lora-info). Importing this package imports torch.
"""

from .io import (
    AppliedLora,
    LoadReport,
    LoraFile,
    ModuleWeights,
    SavedLora,
    apply_loras,
    check_arch,
    load_weights,
    network_from_file,
    network_state_dict,
    read_lora_file,
    save_network,
)
from .metadata import LoraMetadata, build_header, file_model_hash, safetensors_hashes
from .modules import LoRAModule
from .naming import Target, find_targets, select_targets
from .network import (
    LoRANetwork,
    NetworkConfig,
    create_network,
    create_network_for,
    merged,
)

__all__ = [
    "AppliedLora",
    "LoRAModule",
    "LoRANetwork",
    "LoadReport",
    "LoraFile",
    "LoraMetadata",
    "ModuleWeights",
    "NetworkConfig",
    "SavedLora",
    "Target",
    "apply_loras",
    "build_header",
    "check_arch",
    "create_network",
    "create_network_for",
    "file_model_hash",
    "find_targets",
    "load_weights",
    "merged",
    "network_from_file",
    "network_state_dict",
    "read_lora_file",
    "safetensors_hashes",
    "save_network",
    "select_targets",
]
