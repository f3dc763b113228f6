"""Fake `launch` module: which packages are installed comes from FAKE_WEBUI_INSTALLED, and every
run_pip call is appended as a JSON line to FAKE_WEBUI_PIP_LOG, with the text of any constraints file
it names (the file is temporary and gone when the test reads the log)."""

import json
import os
import re


def _installed():
    return {n.strip().lower() for n in os.environ.get("FAKE_WEBUI_INSTALLED", "").split(",") if n.strip()}


def is_installed(package):
    return package.lower() in _installed()


def run_pip(command, desc=None, live=False):
    constraints = {}
    for path in re.findall(r'(?:-c|--constraint)\s+"([^"]+)"', command):
        with open(path, encoding="utf-8") as f:
            constraints[path] = f.read()
    with open(os.environ["FAKE_WEBUI_PIP_LOG"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"command": command, "desc": desc, "constraints": constraints}) + "\n")
    fail = os.environ.get("FAKE_WEBUI_PIP_FAIL", "")
    if fail and fail in command:
        raise RuntimeError(f"Couldn't install {desc}.")
    return ""
