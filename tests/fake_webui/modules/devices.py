"""`modules.devices`: the CPU everywhere (tests have no GPU)."""

import torch

cpu = torch.device("cpu")
device = torch.device("cpu")
device_interrogate = torch.device("cpu")
dtype = torch.float32
gc_calls = []


def torch_gc():
    gc_calls.append(1)
