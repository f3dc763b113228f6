"""The parts of `modules.shared` LoRA Studio uses: opts, OptionInfo, cmd_opts."""

import argparse


class OptionInfo:
    # Same parameters as AUTOMATIC1111 1.10.1's modules/options.py OptionInfo (category_id is 1.7+).
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None,
                 section=None, refresh=None, comment_before="", comment_after="", infotext=None,
                 restrict_api=False, category_id=None):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.refresh = refresh
        self.category_id = category_id
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api
        self.do_not_save = False
        self.reload_ui = False
        self.restart = False

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def needs_reload_ui(self):
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        self.reload_ui = True
        return self

    def needs_restart(self):
        self.comment_after += " <span class='info'>(requires restart)</span>"
        self.restart = True
        return self


class Options:
    def __init__(self):
        self.data = {}
        self.data_labels = {}

    def add_option(self, key, info):
        self.data_labels[key] = info
        if key not in self.data and not info.do_not_save:
            self.data[key] = info.default

    def __getattr__(self, item):
        data = self.__dict__.get("data", {})
        if item in data:
            return data[item]
        labels = self.__dict__.get("data_labels", {})
        if item in labels:
            return labels[item].default
        raise AttributeError(item)


opts = Options()

cmd_opts = argparse.Namespace(
    listen=False, share=False, ngrok=None, server_name=None, enable_insecure_extension_access=False,
    lora_dir=None, lyco_dir_backcompat=None, ckpt_dir=None, vae_dir=None, embeddings_dir=None,
)

# ---- added for the WebUI host tests (tests/test_host_webui*.py) ----
from modules.shared_state import State

state = State()
sd_model = None  # a test sets the loaded model (tests/fake_webui/fake_models.py)
loaded_hypernetworks = []
interrogator = None
for _flag, _value in (("lowvram", False), ("medvram", False), ("no_half", False), ("api", False),
                      ("nowebui", False), ("api_auth", None)):
    setattr(cmd_opts, _flag, _value)
