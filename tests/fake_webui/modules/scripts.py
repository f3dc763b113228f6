"""`modules.scripts.basedir()`: the folder of the extension being imported (set by the test)."""

current_basedir = None


def basedir():
    return current_basedir
