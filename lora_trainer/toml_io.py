"""TOML in and out: `tomllib` reads (tomli on Python 3.10), a small writer of our own writes.

The writer covers what our files hold: strings, booleans, integers, floats, dates as strings,
arrays of those, nested tables and arrays of tables. Output is stable (keys in insertion order)
so a user's diff of project.toml shows only what changed.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from .errors import StudioError
from .fileio import write_text


def _parser():
    """The standard library's tomllib (3.11+), or the same parser as the `tomli` package on 3.10.

    Imported when first needed, not with this module: the WebUI imports the extension before it
    has run our install.py only when started with --skip-install, and then the tab must still
    build and say what is missing when a file is read.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise StudioError(
                "Reading TOML on Python 3.10 needs the tomli package, which is not installed.",
                "Restart the WebUI without --skip-install (the extension's install.py adds it), or run "
                "`pip install tomli` in the WebUI's Python environment.",
            ) from None
    return tomllib

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def loads(text: str, source: str = "<string>") -> dict[str, Any]:
    tomllib = _parser()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StudioError(f"{source} is not valid TOML: {e}.", "Fix the line it names, or restore it from the trash.") from None


def value_of(text: str) -> Any:
    """One value as TOML writes it (`3e-4`, `true`, `[0.9, 0.99]`, `"x"`), or the stripped text
    itself when it is not TOML (`AdamW8bit`): how `--set key=value` and the optimizer-arguments box read."""
    tomllib = _parser()
    try:
        return tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def load(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError:
        raise StudioError(f"{path} is not a UTF-8 text file.", "Save it as UTF-8.") from None
    return loads(text, str(path))


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else _string(k)


def _string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(v: Any) -> str:
    if isinstance(v, bool):  # before int: bool is an int subclass
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, os.PathLike):
        return _string(os.fspath(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):  # inline table: only inside arrays
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    if hasattr(v, "isoformat"):
        return v.isoformat()
    raise TypeError(f"cannot write {type(v).__name__} value {v!r} to TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(x, dict) for x in v)


def _emit_table(lines: list[str], table: dict[str, Any], path: tuple[str, ...]) -> None:
    scalars = [(k, v) for k, v in table.items() if v is not None and not isinstance(v, dict) and not _is_table_array(v)]
    for k, v in scalars:
        lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in table.items():
        if isinstance(v, dict):
            sub = path + (k,)
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_key(p) for p in sub) + "]")
            _emit_table(lines, v, sub)
        elif _is_table_array(v):
            sub = path + (k,)
            for item in v:
                if lines:
                    lines.append("")
                lines.append("[[" + ".".join(_key(p) for p in sub) + "]]")
                _emit_table(lines, item, sub)


def dumps(doc: dict[str, Any]) -> str:
    """Serialise a dict of TOML values. `None` values are left out (TOML has no null)."""
    lines: list[str] = []
    _emit_table(lines, doc, ())
    return "\n".join(lines) + "\n"


def save(path: str | os.PathLike, doc: dict[str, Any]) -> None:
    write_text(path, dumps(doc))
