"""Skip marks for what the installed torch can not do, found by trying it (no version checks).

`cpu_half`: float16 matmul and layer_norm on the CPU. torch 2.1 (AUTOMATIC1111 1.10's pin) has
neither kernel; the WebUIs run float32 on a CPU, so only the tests that feed fp16 tensors to a CPU
model skip there.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


def _cpu_runs_half() -> bool:
    x = torch.ones(2, 2, dtype=torch.float16)
    try:
        F.layer_norm(x @ x, (2,))
    except RuntimeError:  # '"addmm_impl_cpu_" not implemented for \'Half\'' and the like
        return False
    return True


cpu_half = pytest.mark.skipif(
    not _cpu_runs_half(),
    reason="this torch has no float16 matmul/layer_norm on the CPU (torch 2.1, A1111 1.10's pin)",
)
