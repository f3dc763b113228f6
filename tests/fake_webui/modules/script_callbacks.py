"""Records callback registrations the way the WebUI's `script_callbacks` receives them."""

registered: dict[str, list] = {}


def _add(category, fn, name=None):
    registered.setdefault(category, []).append(fn)


def on_ui_tabs(fn, *, name=None):
    _add("ui_tabs", fn, name)


def on_ui_settings(fn, *, name=None):
    _add("ui_settings", fn, name)


def on_script_unloaded(fn, *, name=None):
    _add("script_unloaded", fn, name)


def on_app_started(fn, *, name=None):
    _add("app_started", fn, name)


def on_model_loaded(fn, *, name=None):
    _add("model_loaded", fn, name)
