"""modules/infotext_utils.py (A1111 1.10, Forge): the "Send to" buttons and their registry. The
WebUI connects the registered bindings after every tab is built (connect_paste_params_buttons)."""

import gradio as gr

registered_param_bindings = []


class ParamBinding:
    def __init__(self, paste_button, tabname, source_text_component=None, source_image_component=None,
                 source_tabname=None, override_settings_component=None, paste_field_names=None):
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = paste_field_names or []


def create_buttons(tabs_list):
    return {tab: gr.Button(f"Send to {tab}", elem_id=f"{tab}_tab") for tab in tabs_list}


def register_paste_params_button(binding):
    registered_param_bindings.append(binding)
