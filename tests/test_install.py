"""install.py: the plan for fake installed-package lists, and the real file run as the WebUI runs it
(a subprocess, PYTHONPATH = a WebUI root whose `launch` is tests/fake_webui/launch.py)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKE_WEBUI = Path(__file__).resolve().parent / "fake_webui"


def load_install():
    spec = importlib.util.spec_from_file_location("lora_studio_install", REPO / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # must not run main(): it needs the WebUI's `launch`
    return module


install = load_install()
PROTECTED = {p.lower() for p in install.PROTECTED}
EVERYTHING = {*install.REQUIRED, *install.PROTECTED, "onnxruntime", "tomli"}
PY310, PY311 = (3, 10), (3, 11)


def names(plan):
    return {install._dist_name(p).lower() for p in plan}


def test_nothing_when_everything_is_present():
    assert install.plan_installs(EVERYTHING, cuda_available=True, python_version=PY310) == []
    assert install.plan_installs(EVERYTHING - {"tomli"}, cuda_available=False, python_version=PY311) == []


def test_missing_packages_are_planned():
    installed = EVERYTHING - {"pandas", "open_clip_torch"}
    assert install.plan_installs(installed, cuda_available=False, python_version=PY311) == ["open_clip_torch", "pandas"]


def test_names_compare_without_case():
    installed = {n.upper() for n in EVERYTHING}
    assert install.plan_installs(installed, cuda_available=False, python_version=PY310) == []


def test_tomli_only_before_python_311():
    installed = EVERYTHING - {"tomli"}
    assert install.plan_installs(installed, False, python_version=PY310) == ["tomli"]
    assert install.plan_installs(installed, False, python_version=PY311) == []


@pytest.mark.parametrize(
    "installed_onnx, cuda, cuda_major, expected",
    [
        (set(), False, None, ["onnxruntime"]),
        (set(), True, 12, ["onnxruntime-gpu"]),
        (set(), True, 11, ["onnxruntime-gpu==1.18.1"]),  # PyPI's newer GPU builds need CUDA 12
        ({"onnxruntime"}, True, 12, []),  # never both builds side by side
        ({"onnxruntime-gpu"}, False, None, []),
        ({"onnxruntime-gpu"}, True, 12, []),
    ],
)
def test_onnxruntime_choice(installed_onnx, cuda, cuda_major, expected):
    installed = (EVERYTHING - {"onnxruntime"}) | installed_onnx
    assert install.plan_installs(installed, cuda, cuda_major, python_version=PY311) == expected


@pytest.mark.parametrize("cuda", [False, True])
@pytest.mark.parametrize("py", [PY310, PY311])
def test_protected_packages_never_planned(cuda, py):
    # from nothing installed at all to everything: every subset of the protected list missing
    for drop in range(len(install.PROTECTED) + 1):
        installed = set(install.PROTECTED[:drop])
        plan = install.plan_installs(installed, cuda, 12, python_version=py)
        assert not names(plan) & PROTECTED
        assert names(plan) >= {r.lower() for r in install.REQUIRED}


def test_missing_protected_are_reported_not_installed():
    assert install.missing_protected(EVERYTHING) == []
    assert install.missing_protected(EVERYTHING - {"torch", "xformers", "gradio"}) == ["torch", "gradio"]


# ---------------------------------------------------------------------------------------------
# The real file, run as the WebUI runs it


def run_install(tmp_path, installed, fail=""):
    log = tmp_path / "pip.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(PYTHONPATH=str(FAKE_WEBUI), FAKE_WEBUI_INSTALLED=",".join(sorted(installed)),
               FAKE_WEBUI_PIP_LOG=str(log), FAKE_WEBUI_PIP_FAIL=fail)
    # cwd is the WebUI's folder, not ours, as in AUTOMATIC1111's run_extension_installer
    result = subprocess.run([sys.executable, str(REPO / "install.py")], cwd=tmp_path, env=env,
                            check=False, capture_output=True, text=True, timeout=120)
    calls = [json.loads(line) for line in log.read_text("utf-8").splitlines()] if log.exists() else []
    return result, calls


def installed_targets(calls):
    # `install "<requirement>" -c "<constraints>"`: the requirement is the first quoted word
    return [c["command"].split('"')[1] for c in calls]


def test_subprocess_installs_only_what_is_missing(tmp_path):
    installed = EVERYTHING - {"pandas", "requests"}
    result, calls = run_install(tmp_path, installed)
    assert result.returncode == 0, result.stderr
    assert installed_targets(calls) == ["requests", "pandas"]
    for call in calls:
        assert call["command"].startswith("install ")
        (text,) = call["constraints"].values()
        # the WebUI's own packages are pinned at their installed versions for every install
        pins = dict(line.split("==", 1) for line in text.split())
        assert set(pins) <= set(install.PROTECTED)
        assert pins["torch"] == importlib.metadata.version("torch")
        assert pins["numpy"] == importlib.metadata.version("numpy")


def test_subprocess_never_passes_a_protected_package(tmp_path):
    result, calls = run_install(tmp_path, installed=set())  # a WebUI with nothing at all
    assert result.returncode == 0, result.stderr
    targets = installed_targets(calls)
    assert not names(targets) & PROTECTED
    assert {t.lower() for t in targets} >= {r.lower() for r in install.REQUIRED}
    assert "onnxruntime" in targets  # this machine's torch has no usable CUDA
    for name in ("torch", "gradio", "numpy", "Pillow"):
        assert f"LoRA Studio: {name} is not installed" in result.stdout
    assert "xformers is not installed" not in result.stdout  # optional


def test_subprocess_nothing_to_do(tmp_path):
    result, calls = run_install(tmp_path, EVERYTHING)
    assert (result.returncode, calls, result.stdout) == (0, [], "")


def test_subprocess_failure_is_a_message_not_a_crash(tmp_path):
    result, calls = run_install(tmp_path, EVERYTHING - {"pandas", "requests"}, fail="pandas")
    assert result.returncode == 0
    assert installed_targets(calls) == ["requests", "pandas"]
    assert "LoRA Studio: could not install pandas" in result.stdout
    assert "Traceback" not in result.stderr


def test_subprocess_without_the_webui(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, str(REPO / "install.py")], cwd=tmp_path, env=env,
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "LoRA Studio: the installer stopped early (ModuleNotFoundError" in result.stdout


def test_gpu_build_falls_back_to_cpu(monkeypatch, capsys):
    calls = []

    class FakeLaunch:
        @staticmethod
        def is_installed(name):
            return name in EVERYTHING - {"onnxruntime"}

        @staticmethod
        def run_pip(command, desc=None):
            calls.append(command.split('"')[1])
            if "onnxruntime-gpu" in command:
                raise RuntimeError("no wheel for this platform")

    monkeypatch.setitem(sys.modules, "launch", FakeLaunch)
    monkeypatch.setattr(install, "cuda_usable", lambda: (True, 12))
    install.main()
    assert calls == ["onnxruntime-gpu", "onnxruntime"]
    assert "trying onnxruntime instead" in capsys.readouterr().out
