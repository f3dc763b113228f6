"""`modules.paths.models_path` (the test sets it to a tmp folder)."""

models_path = "/nonexistent/webui/models"
data_path = "/nonexistent/webui"
