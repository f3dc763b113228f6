"""Studio-wide settings: where projects live, booru credentials, tagger models, path rules.

One typed `StudioSettings`, two homes:
- standalone (CLI, standalone app): `<root>/studio-settings.toml`, read and written here;
- inside the WebUI: the WebUI's own Settings tab, keys `lora_studio_<field>` registered and read by
  `host/webui_settings.py` through the table `SETTINGS_TABLE` below.

`SETTINGS_TABLE` is the one list of settings (key, field, label, info); the WebUI defaults come from
the dataclass so the two never disagree, and a test checks that every field has a row.
Nothing here imports the WebUI or gradio.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import toml_io
from .errors import StudioError

SETTINGS_FILE = "studio-settings.toml"

# Fallbacks for the booru credentials, so a key can live outside any file (CI, shared machines).
ENV_GELBOORU_API_KEY = "GELBOORU_API_KEY"
ENV_GELBOORU_USER_ID = "GELBOORU_USER_ID"


@dataclass
class StudioSettings:
    # Folder that holds the projects (`<root>/<project>/dataset`, ...). None: the default root of
    # project.default_root(); standalone it is the folder the settings file lives in.
    root: Path | None = None
    # Gelbooru's API asks for both since 2023; empty means anonymous (rate-limited, may be refused).
    gelbooru_api_key: str = ""
    gelbooru_user_id: str = ""
    # Where the WD tagger ONNX models are kept. None: the tagger's default folder.
    tagger_dir: Path | None = None
    # Inside the WebUI, epochs go to `<Lora folder>/<project>/` so they show up in the Lora tab at
    # once (the guide's workflow). False: `<root>/<project>/output/` as standalone.
    webui_lora_output: bool = True
    # Folders outside the studio root and the WebUI's model folders that paths may point into.
    extra_allowed_dirs: list[Path] = field(default_factory=list)
    # Any folder on the server. Off by default and forced off while the server is reachable from
    # other computers (--listen/--share) unless started with --enable-insecure-extension-access.
    allow_any_path: bool = False


@dataclass(frozen=True)
class SettingRow:
    field: str  # StudioSettings field
    key: str  # WebUI option key: permanent, it is saved in the WebUI's config.json
    label: str
    info: str
    component_args: Mapping[str, Any] | None = None  # extra gradio arguments for the WebUI component
    needs_reload_ui: bool = False  # the tab reads it once, when it is built


SETTINGS_TABLE: tuple[SettingRow, ...] = (
    SettingRow(
        "root", "lora_studio_root", "Studio folder",
        "Folder that holds your projects (dataset, captions, project.toml). Empty: <WebUI folder>/lora-studio.",
        needs_reload_ui=True,
    ),
    SettingRow(
        "gelbooru_api_key", "lora_studio_gelbooru_api_key", "Gelbooru API key",
        "From your Gelbooru account settings. Stored in the WebUI's config.json. "
        "Empty: the GELBOORU_API_KEY environment variable, else anonymous.",
        {"type": "password"},
    ),
    SettingRow(
        "gelbooru_user_id", "lora_studio_gelbooru_user_id", "Gelbooru user id",
        "Shown next to the API key in your Gelbooru account settings. Empty: GELBOORU_USER_ID.",
    ),
    SettingRow(
        "tagger_dir", "lora_studio_tagger_dir", "Tagger model folder",
        "Where the WD tagger models (model.onnx + selected_tags.csv) are kept. Empty: the default folder.",
    ),
    SettingRow(
        "webui_lora_output", "lora_studio_webui_lora_output", "Save LoRAs in the WebUI's Lora folder",
        "Epoch files go to <Lora folder>/<project>/ so they appear in the Lora tab at once. "
        "Off: <studio folder>/<project>/output/.",
    ),
    SettingRow(
        "extra_allowed_dirs", "lora_studio_extra_allowed_dirs", "Extra allowed folders",
        "One folder per line. Datasets and outputs may also live here, besides the studio folder and "
        "the WebUI's model folders.",
        {"lines": 3},
    ),
    SettingRow(
        "allow_any_path", "lora_studio_allow_any_path", "Allow any folder on the server",
        "Lets paths point anywhere the WebUI can read or write. Ignored when the WebUI runs with "
        "--listen or --share, unless it was also started with --enable-insecure-extension-access.",
    ),
)


def _field_types() -> dict[str, str]:
    # Annotations are strings under `from __future__ import annotations`; compare them as text.
    return {f.name: str(f.type) for f in dataclasses.fields(StudioSettings)}


def default_value(field_name: str) -> Any:
    """The dataclass default of `field_name`, written the way a WebUI option stores it."""
    f = next(f for f in dataclasses.fields(StudioSettings) if f.name == field_name)
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    return to_plain(field_name, value)


def to_plain(field_name: str, value: Any) -> Any:
    """Typed value -> plain value (str/bool) as the WebUI stores it: paths as text, lists one per line."""
    kind = _field_types()[field_name]
    if kind == "bool":
        return bool(value)
    if kind.startswith("list["):
        return "\n".join(os.fspath(p) for p in value)
    if value is None:
        return ""
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def from_plain(field_name: str, value: Any, source: str) -> Any:
    """Plain value (from a WebUI option or a TOML file) -> the typed field value.

    `source` names where the value came from, for the error message.
    """
    kind = _field_types()[field_name]
    if kind == "bool":
        if not isinstance(value, bool):
            raise StudioError(f"{source}: {field_name} must be true or false, not {value!r}.",
                              f"Set {field_name} = true or {field_name} = false.")
        return value
    if kind.startswith("list["):
        if isinstance(value, str):  # the WebUI's multi-line textbox
            items = value.splitlines()
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            items = value
        else:
            raise StudioError(f"{source}: {field_name} must be a list of folders, not {value!r}.",
                              f'Write it as {field_name} = ["/path/one", "/path/two"].')
        return [Path(os.path.expanduser(s.strip())) for s in items if s.strip()]
    if not isinstance(value, str):
        raise StudioError(f"{source}: {field_name} must be text, not {value!r}.",
                          f'Write it in quotes: {field_name} = "...".')
    if kind == "Path | None":
        return Path(os.path.expanduser(value.strip())) if value.strip() else None
    return value.strip()


def settings_from_values(get: Callable[[str, Any], Any], source: str = "settings") -> StudioSettings:
    """Build settings from a `get(key, default)` lookup over the WebUI keys (e.g. `opts.data.get`).

    A missing key gets the dataclass default, so a WebUI that never saved our settings still works.
    """
    values = {}
    for row in SETTINGS_TABLE:
        values[row.field] = from_plain(row.field, get(row.key, default_value(row.field)), f"{source} ({row.key})")
    return StudioSettings(**values)


def with_env_fallbacks(settings: StudioSettings, environ: Mapping[str, str] | None = None) -> StudioSettings:
    """Fill empty booru credentials from GELBOORU_API_KEY / GELBOORU_USER_ID."""
    environ = os.environ if environ is None else environ
    return dataclasses.replace(
        settings,
        gelbooru_api_key=settings.gelbooru_api_key or environ.get(ENV_GELBOORU_API_KEY, "").strip(),
        gelbooru_user_id=settings.gelbooru_user_id or environ.get(ENV_GELBOORU_USER_ID, "").strip(),
    )


# The studio root is where the file lives, so writing it inside the file would only invite the two
# to disagree after the folder is moved.
_NOT_IN_FILE = {"root"}


def settings_path(root: str | os.PathLike) -> Path:
    return Path(root) / SETTINGS_FILE


def load_settings(root: str | os.PathLike, environ: Mapping[str, str] | None = None) -> StudioSettings:
    """Standalone settings from `<root>/studio-settings.toml` (defaults when there is no file yet)."""
    path = settings_path(root)
    doc = toml_io.load(path) if path.is_file() else {}
    known = {f.name for f in dataclasses.fields(StudioSettings)} - _NOT_IN_FILE
    unknown = sorted(set(doc) - known)
    if unknown:
        raise StudioError(f"{path}: unknown setting(s) {', '.join(unknown)}.",
                          f"Remove or correct them; the settings are {', '.join(sorted(known))}.")
    values = {name: from_plain(name, value, str(path)) for name, value in doc.items()}
    return with_env_fallbacks(StudioSettings(root=Path(root), **values), environ)


def save_settings(settings: StudioSettings, root: str | os.PathLike | None = None,
                  environ: Mapping[str, str] | None = None) -> Path:
    """Write `<root>/studio-settings.toml` atomically; returns its path.

    A credential equal to its environment variable is left out: a secret someone kept out of
    files on purpose is never copied into one.
    """
    root = root if root is not None else settings.root
    if root is None:
        raise StudioError("The settings have no studio folder to be saved in.", "Pass the studio folder (--root).")
    environ = os.environ if environ is None else environ
    from_env = {
        "gelbooru_api_key": environ.get(ENV_GELBOORU_API_KEY, "").strip(),
        "gelbooru_user_id": environ.get(ENV_GELBOORU_USER_ID, "").strip(),
    }
    doc: dict[str, Any] = {}
    for f in dataclasses.fields(StudioSettings):
        if f.name in _NOT_IN_FILE:
            continue
        value = getattr(settings, f.name)
        if f.name in from_env and value and value == from_env[f.name]:
            continue
        if isinstance(value, list):
            doc[f.name] = [os.fspath(p) for p in value]
        elif value is not None:
            doc[f.name] = os.fspath(value) if isinstance(value, os.PathLike) else value
    path = settings_path(root)
    toml_io.save(path, doc)
    return path
