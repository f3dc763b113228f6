"""Fake `modules` package of the WebUI, for tests (see ../README.md)."""
