"""Stand-in for the built-in Lora extension's `networks` module (AUTOMATIC1111 1.10.1
extensions-builtin/Lora/networks.py): the attribute names and the merge-with-backup behaviour the
WebUI host relies on. A "network" here adds `strength` to one layer's weight (in place, backup
kept on the CPU), as the real one adds up @ down * scale; the layer then records
`network_current_names` exactly as the real `network_apply_weights` does."""

import os

import torch

available_networks = {}
available_network_aliases = {}
loaded_networks = []
networks_in_memory = {}
list_calls = []


class NetworkOnDisk:
    def __init__(self, name, filename):
        self.name, self.filename = name, filename


class Network:
    def __init__(self, name, network_on_disk):
        self.name = name
        self.network_on_disk = network_on_disk
        self.mtime = os.path.getmtime(network_on_disk.filename)
        self.te_multiplier = self.unet_multiplier = self.dyn_dim = 1.0


def list_available_networks():
    list_calls.append(1)
    available_networks.clear()
    from modules import shared

    root = shared.cmd_opts.lora_dir
    for dirpath, _, files in os.walk(root or "/nonexistent"):
        for f in files:
            if f.endswith(".safetensors"):
                name = os.path.splitext(f)[0]
                available_networks[name] = NetworkOnDisk(name, os.path.join(dirpath, f))
    available_network_aliases.clear()
    available_network_aliases.update(available_networks)


def load_networks(names, te_multipliers=None, unet_multipliers=None, dyn_dims=None):
    already = {n.name: n for n in loaded_networks if n.name in names}
    loaded_networks.clear()
    for i, name in enumerate(names):
        disk = available_networks.get(name)
        if disk is None:
            list_available_networks()
            disk = available_networks.get(name)
        if disk is None:
            continue
        net = already.get(name) or networks_in_memory.get(name)
        if net is None or os.path.getmtime(disk.filename) > net.mtime:
            net = Network(name, disk)
            networks_in_memory[name] = net
        net.te_multiplier = te_multipliers[i] if te_multipliers else 1.0
        net.unet_multiplier = unet_multipliers[i] if unet_multipliers else 1.0
        loaded_networks.append(net)


def network_restore_weights_from_backup(self):
    backup = getattr(self, "network_weights_backup", None)
    if backup is not None:
        self.weight.copy_(backup)  # fails on a parameter that requires grad unless under no_grad


def strength_of(name):
    """The fake delta a network adds: a number read from its file's size, so two files differ."""
    disk = available_networks[name]
    return 0.001 * (os.path.getsize(disk.filename) % 97 + 1) + os.path.getmtime(disk.filename) % 1 * 1e-3


def network_apply_weights(self):
    wanted = tuple((n.name, n.te_multiplier, n.unet_multiplier, n.dyn_dim) for n in loaded_networks)
    current = getattr(self, "network_current_names", ())
    if getattr(self, "network_weights_backup", None) is None and wanted != ():
        self.network_weights_backup = self.weight.detach().to("cpu", copy=True)
    if current != wanted:
        network_restore_weights_from_backup(self)
        with torch.no_grad():
            for n in loaded_networks:
                self.weight.add_(strength_of(n.name) * n.unet_multiplier)
        self.network_current_names = wanted
