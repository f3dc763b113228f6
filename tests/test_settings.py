"""Studio settings: the table against the dataclass, TOML round trips, env fallbacks, and the WebUI
entry script loaded the way the WebUI loads it, against the fake WebUI in tests/fake_webui.

Marked `gradio3`: the entry script builds the tab, and AUTOMATIC1111 1.10 runs gradio 3.41.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

from lora_trainer import toml_io
from lora_trainer.errors import StudioError
from lora_trainer.settings import (
    SETTINGS_FILE,
    SETTINGS_TABLE,
    StudioSettings,
    default_value,
    from_plain,
    load_settings,
    save_settings,
    settings_from_values,
    to_plain,
    with_env_fallbacks,
)

pytestmark = pytest.mark.gradio3

REPO = Path(__file__).resolve().parents[1]
FAKE_WEBUI = Path(__file__).resolve().parent / "fake_webui"
NO_ENV: dict[str, str] = {}


# ---------------------------------------------------------------------------------------------
# The table


def test_table_and_dataclass_agree():
    fields = [f.name for f in dataclasses.fields(StudioSettings)]
    rows = [row.field for row in SETTINGS_TABLE]
    assert sorted(rows) == sorted(fields)  # every field has a row, every row a field
    assert len(set(rows)) == len(rows)
    keys = [row.key for row in SETTINGS_TABLE]
    assert len(set(keys)) == len(keys)
    for row in SETTINGS_TABLE:
        assert row.key == f"lora_studio_{row.field}"
        assert row.label and row.info.endswith(".")


def test_defaults_as_the_webui_stores_them():
    assert {row.field: default_value(row.field) for row in SETTINGS_TABLE} == {
        "root": "",
        "gelbooru_api_key": "",
        "gelbooru_user_id": "",
        "tagger_dir": "",
        "webui_lora_output": True,
        "extra_allowed_dirs": "",
        "allow_any_path": False,
    }
    # and they read back as the dataclass defaults
    assert settings_from_values(lambda key, default: default) == StudioSettings()


def test_api_key_is_a_password_box():
    row = next(r for r in SETTINGS_TABLE if r.field == "gelbooru_api_key")
    assert dict(row.component_args) == {"type": "password"}


def test_plain_round_trip():
    s = StudioSettings(root=Path("/data/studio"), gelbooru_api_key="k", tagger_dir=Path("/m/tagger"),
                       extra_allowed_dirs=[Path("/a"), Path("/b c")], allow_any_path=True, webui_lora_output=False)
    plain = {row.key: to_plain(row.field, getattr(s, row.field)) for row in SETTINGS_TABLE}
    assert plain["lora_studio_extra_allowed_dirs"] == "/a\n/b c"
    assert settings_from_values(lambda key, default: plain.get(key, default)) == s


def test_from_plain_cleans_and_rejects():
    assert from_plain("extra_allowed_dirs", " /a \n\n/b\n", "x") == [Path("/a"), Path("/b")]
    assert from_plain("root", "   ", "x") is None
    assert from_plain("gelbooru_user_id", " 123 ", "x") == "123"
    with pytest.raises(StudioError, match="allow_any_path must be true or false"):
        from_plain("allow_any_path", "yes", "studio-settings.toml")
    with pytest.raises(StudioError, match="gelbooru_user_id must be text"):
        from_plain("gelbooru_user_id", 123, "studio-settings.toml")


# ---------------------------------------------------------------------------------------------
# Standalone: studio-settings.toml and the environment


def test_missing_file_gives_defaults_with_root(tmp_path):
    assert load_settings(tmp_path, NO_ENV) == StudioSettings(root=tmp_path)


def test_toml_round_trip(tmp_path):
    s = StudioSettings(root=tmp_path, gelbooru_api_key='a"b\\c', gelbooru_user_id="42", tagger_dir=tmp_path / "t",
                       webui_lora_output=False, extra_allowed_dirs=[tmp_path / "x", Path("/y")], allow_any_path=True)
    path = save_settings(s, environ=NO_ENV)
    assert path == tmp_path / SETTINGS_FILE
    assert "root" not in toml_io.load(path)  # the file's folder is the root
    assert load_settings(tmp_path, NO_ENV) == s


def test_unknown_and_mistyped_keys_are_errors(tmp_path):
    (tmp_path / SETTINGS_FILE).write_text('gelbooru_api_kye = "x"\n', "utf-8")
    with pytest.raises(StudioError, match="unknown setting.*gelbooru_api_kye") as e:
        load_settings(tmp_path, NO_ENV)
    assert "gelbooru_api_key" in e.value.fix
    (tmp_path / SETTINGS_FILE).write_text('allow_any_path = "true"\n', "utf-8")
    with pytest.raises(StudioError, match="allow_any_path must be true or false"):
        load_settings(tmp_path, NO_ENV)
    (tmp_path / SETTINGS_FILE).write_text('root = "/elsewhere"\n', "utf-8")
    with pytest.raises(StudioError, match="unknown setting.*root"):
        load_settings(tmp_path, NO_ENV)


def test_environment_fills_empty_credentials_only(tmp_path):
    env = {"GELBOORU_API_KEY": " envkey ", "GELBOORU_USER_ID": "7"}
    assert with_env_fallbacks(StudioSettings(), env).gelbooru_api_key == "envkey"
    s = with_env_fallbacks(StudioSettings(gelbooru_api_key="mine"), env)
    assert (s.gelbooru_api_key, s.gelbooru_user_id) == ("mine", "7")

    loaded = load_settings(tmp_path, env)
    assert (loaded.gelbooru_api_key, loaded.gelbooru_user_id) == ("envkey", "7")
    # saving what was loaded does not copy the secret from the environment into the file
    save_settings(loaded, environ=env)
    text = (tmp_path / SETTINGS_FILE).read_text("utf-8")
    assert "envkey" not in text and "gelbooru_user_id" not in text
    assert load_settings(tmp_path, NO_ENV).gelbooru_api_key == ""


def test_save_needs_a_root():
    with pytest.raises(StudioError, match="no studio folder"):
        save_settings(StudioSettings(), environ=NO_ENV)


# ---------------------------------------------------------------------------------------------
# Inside the WebUI (fake modules)


@pytest.fixture
def fake_webui(tmp_path, monkeypatch):
    """tests/fake_webui first on sys.path, fresh `modules` for each test, the real ones restored after."""

    def purge():
        return {name: sys.modules.pop(name) for name in list(sys.modules)
                if name in ("modules", "launch") or name.startswith("modules.")}

    saved = purge()
    monkeypatch.syspath_prepend(str(FAKE_WEBUI))
    from modules import paths, shared

    paths.models_path = str(tmp_path / "models")
    paths.data_path = str(tmp_path)
    yield shared
    purge()
    sys.modules.update(saved)


def load_entry_script():
    """Load scripts/lora_studio.py as the WebUI does: by file, under its bare name, not as a package."""
    path = REPO / "scripts" / "lora_studio.py"
    spec = importlib.util.spec_from_file_location("lora_studio.py", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_register_settings_adds_every_key(fake_webui):
    from lora_trainer.host.webui_settings import SECTION, register_settings

    register_settings()
    labels = fake_webui.opts.data_labels
    assert sorted(labels) == sorted(row.key for row in SETTINGS_TABLE)
    for row in SETTINGS_TABLE:
        info = labels[row.key]
        assert row.key.startswith("lora_studio_")
        assert info.section == SECTION == ("lora_studio", "LoRA Studio")
        assert info.default == default_value(row.field)
        assert row.info in info.comment_after
        assert info.reload_ui == row.needs_reload_ui
    assert labels["lora_studio_gelbooru_api_key"].component_args == {"type": "password"}
    assert labels["lora_studio_extra_allowed_dirs"].component_args == {"lines": 3}


def test_read_settings_from_opts(fake_webui, tmp_path, monkeypatch):
    from lora_trainer.host import webui_settings

    monkeypatch.delenv("GELBOORU_API_KEY", raising=False)
    monkeypatch.setenv("GELBOORU_USER_ID", "99")
    webui_settings.register_settings()
    assert webui_settings.read_settings() == StudioSettings(gelbooru_user_id="99")

    fake_webui.opts.data.update({
        "lora_studio_root": str(tmp_path / "studio"),
        "lora_studio_gelbooru_api_key": "key",
        "lora_studio_extra_allowed_dirs": "/srv/a\n/srv/b",
        "lora_studio_allow_any_path": True,
    })
    s = webui_settings.read_settings()
    assert s.root == tmp_path / "studio" and s.gelbooru_api_key == "key" and s.gelbooru_user_id == "99"
    assert s.extra_allowed_dirs == [Path("/srv/a"), Path("/srv/b")] and s.allow_any_path is True
    assert webui_settings.studio_root(s) == tmp_path / "studio"


def test_webui_folders_and_remote(fake_webui, tmp_path, monkeypatch):
    from lora_trainer.host import webui_settings

    monkeypatch.delenv("LORA_STUDIO_ROOT", raising=False)
    assert webui_settings.studio_root(StudioSettings()) == tmp_path / "lora-studio"
    assert webui_settings.lora_dir() == tmp_path / "models" / "Lora"
    assert webui_settings.model_folders() == [tmp_path / "models"]
    fake_webui.cmd_opts.lora_dir = "/loras"
    fake_webui.cmd_opts.ckpt_dir = "/ckpts"
    assert webui_settings.lora_dir() == Path("/loras")
    assert webui_settings.model_folders() == [tmp_path / "models", Path("/loras"), Path("/ckpts")]
    fake_webui.cmd_opts.ckpt_dirs = ["/neo/ckpt-a", "/neo/ckpt-b"]  # Forge Neo: several folders per kind
    fake_webui.cmd_opts.vae_dirs = ["/neo/vae"]
    assert webui_settings.model_folders()[3:] == [Path("/neo/ckpt-a"), Path("/neo/ckpt-b"), Path("/neo/vae")]

    assert webui_settings.remote_restricted() is False
    fake_webui.cmd_opts.server_name = "0.0.0.0"
    assert webui_settings.remote_restricted() is True
    fake_webui.cmd_opts.enable_insecure_extension_access = True
    assert webui_settings.remote_restricted() is False


def test_entry_script_registers_callbacks(fake_webui, monkeypatch):
    from modules import script_callbacks

    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p).resolve() != REPO])
    module = load_entry_script()
    assert str(REPO) in sys.path  # lora_trainer stays importable after the WebUI restores sys.path
    assert script_callbacks.registered["ui_tabs"] == [module.on_ui_tabs]
    assert script_callbacks.registered["ui_settings"] == [module.on_ui_settings]

    module.on_ui_settings()
    assert sorted(fake_webui.opts.data_labels) == sorted(row.key for row in SETTINGS_TABLE)

    # loading twice (the WebUI's "Reload UI") does not grow sys.path
    load_entry_script()
    assert sum(1 for p in sys.path if p == str(REPO)) == 1


def test_entry_script_builds_the_tab(fake_webui, tmp_path):
    if importlib.util.find_spec("lora_trainer.ui.app") is None:
        pytest.skip("lora_trainer.ui.app (the lead's tab) is not there yet")
    import gradio as gr

    fake_webui.opts.data["lora_studio_root"] = str(tmp_path / "studio")
    module = load_entry_script()
    module.on_ui_settings()
    tabs = module.on_ui_tabs()
    assert len(tabs) == 1
    blocks, title, elem_id = tabs[0]
    assert isinstance(blocks, gr.Blocks) and (title, elem_id) == ("LoRA Studio", "lora_studio")
    assert (tmp_path / "studio").is_dir()
    # Compare's "Send to txt2img" is the WebUI's own button, registered for its paste wiring
    from modules import infotext_utils

    (binding,) = infotext_utils.registered_param_bindings
    assert binding.tabname == "txt2img" and binding.source_text_component.elem_id == "lora_studio_compare_cell_params"


def test_reading_toml_without_a_parser_is_a_sentence(monkeypatch, tmp_path):
    """Python 3.10 in a WebUI started with --skip-install: no tomllib, no tomli yet."""
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    (tmp_path / "a.toml").write_text("x = 1\n")
    with pytest.raises(StudioError, match="needs the tomli package") as e:
        toml_io.load(tmp_path / "a.toml")
    assert "pip install tomli" in e.value.fix


def test_a_single_value_reads_as_toml_or_stays_text():
    from lora_trainer.toml_io import value_of

    assert value_of(" 3e-4 ") == 3e-4 and value_of("true") is True and value_of("[0.9, 0.99]") == [0.9, 0.99]
    assert value_of("AdamW8bit") == "AdamW8bit" and value_of('"x y"') == "x y"
