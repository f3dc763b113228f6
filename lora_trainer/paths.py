"""Which folders a path typed into the UI may point into.

The tab is a web page: when the WebUI listens on the network (--listen, --share), whoever reaches
it could otherwise make the server read or write any folder (import `/home/you/.ssh` as a
"dataset", write a LoRA over a system file). So every user-supplied path is confined to the
allowed roots: the studio folder, the WebUI's model folders and the extra folders from settings.
"Any folder" is an opt-in, and while the server is reachable from other computers it needs the
same command-line flag AUTOMATIC1111 asks for before it lets the Extensions tab install code
(--enable-insecure-extension-access): a remote visitor can change settings, but not the flags.
The extra folders are a setting, so a remote visitor could add one; a server that must prevent
that runs with the WebUI's --freeze-settings, as it must for the WebUI's own output-folder settings.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import StudioError
from .settings import StudioSettings

# The flag name is AUTOMATIC1111's; the standalone app accepts the same one so the advice is the same.
OPT_IN_FLAG = "--enable-insecure-extension-access"


def remote_access_restricted(listen: bool, share: bool, opted_in: bool) -> bool:
    """True when arbitrary server paths must stay off: the server is reachable from other
    computers (--listen / --share) and it was not started with the opt-in flag.

    Mirrors AUTOMATIC1111's `cmd_opts.disable_extension_access`.
    """
    return (listen or share) and not opted_in


def _real(path: str | os.PathLike) -> Path:
    # realpath follows every symlink, also in a prefix that exists when the tail does not yet,
    # and folds `..` after following them (so `link/..` is where the link points, not a lexical trick).
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _is_under(path: Path, root: Path) -> bool:
    # normcase: Windows paths compare case-insensitively; a no-op elsewhere.
    p, r = Path(os.path.normcase(path)), Path(os.path.normcase(root))
    return p == r or r in p.parents


def confine(path: str | os.PathLike, allowed_roots: Sequence[str | os.PathLike], allow_any: bool = False,
            *, restricted: bool = False) -> Path:
    """Resolve `path` and return it if it lies inside one of `allowed_roots` (or `allow_any`).

    Symlinks are followed, so a link inside a root that points outside is refused; `..` is folded
    after that. A relative path is taken relative to the first root (the studio folder). The path
    need not exist (an output folder about to be made). `restricted` only changes the advice in
    the error: while the server is remote-reachable the settings opt-in is not enough.
    """
    text = os.fspath(path).strip() if isinstance(path, str) else os.fspath(path)
    if not text:
        raise StudioError("No folder or file was given.", "Type a path.")
    if "\x00" in text:
        raise StudioError(f"{text!r} is not a valid path (it contains a NUL character).", "Type the path again.")
    raw = Path(os.path.expanduser(text))
    if not raw.is_absolute():
        base = Path(allowed_roots[0]) if allowed_roots else Path.cwd()
        raw = base / raw
    resolved = _real(raw)
    if allow_any:
        return resolved
    roots = [_real(r) for r in allowed_roots]
    if any(_is_under(resolved, r) for r in roots):
        return resolved

    listed = "\n".join(f"  {r}" for r in roots) or "  (none)"
    shown = f"{text} (which is {resolved})" if Path(text) != resolved else text
    if restricted:
        fix = ("Add its folder to 'Extra allowed folders' in the LoRA Studio settings. 'Allow any folder on "
               f"the server' is off while the server is reachable from other computers unless it is started "
               f"with {OPT_IN_FLAG}.")
    else:
        fix = ("Add its folder to 'Extra allowed folders' in the LoRA Studio settings, or turn on 'Allow any "
               "folder on the server'.")
    raise StudioError(f"{shown} is outside the folders LoRA Studio may use:\n{listed}\n", fix)


# A name longer than this many bytes (UTF-8) is refused by ext4, NTFS, APFS and tmpfs alike.
NAME_MAX_BYTES = 255


def inside(folder: str | os.PathLike, name: str, what: str = "The name") -> Path:
    """The path of `name` inside `folder`: the one way a name that came from outside (a booru's
    JSON, an archive member, an upload, an API body) becomes a path.

    `name` is relative, with `/` between its parts (an archive member's `sub/a.png`). Refused with
    a sentence: an empty name or part, an absolute or drive path, `..`, a backslash (a separator on
    Windows, so `..\\x` would escape there), NUL and other control characters (a newline in a file
    name breaks every caption tool), a part longer than NAME_MAX_BYTES, and a result that a
    symlink inside `folder` leads out of. `what` names the source in the sentence.
    """
    shown = repr(name)[:120]
    if not isinstance(name, str) or not name:
        raise StudioError(f"{what} is empty.", "Give a file name.")
    problem = ""
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "it contains a control character (a newline, a NUL, ...)"
    elif "\\" in name:
        problem = "it contains a backslash"
    elif name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        problem = "it is an absolute path"
    else:
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            problem = "it has an empty, '.' or '..' part"
        elif any(len(p.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES for p in parts):
            problem = f"a part of it is longer than {NAME_MAX_BYTES} bytes"
    if problem:
        raise StudioError(f"{what} {shown} can not be a file name: {problem}.",
                          "Nothing was written for it; rename it at its source if you need it.")
    root = _real(folder)
    if not _is_under(_real(root / name), root):
        raise StudioError(f"{what} {shown} leads outside {root} (through a symbolic link there).",
                          f"Remove the link from {root}.")
    return Path(folder) / name  # as the caller spelled the folder; checked where it really leads


@dataclass(frozen=True)
class PathPolicy:
    """The allowed roots and the any-folder switch in force for one UI session."""

    roots: tuple[Path, ...]
    allow_any: bool = False
    restricted: bool = False

    def confine(self, path: str | os.PathLike) -> Path:
        return confine(path, self.roots, self.allow_any, restricted=self.restricted)


def path_policy(studio_root: str | os.PathLike, settings: StudioSettings,
                host_folders: Iterable[str | os.PathLike] = (), restricted: bool = False) -> PathPolicy:
    """The policy for `settings`: studio folder first (relative paths start there), then the host's
    model folders, then the extra folders; "any folder" only when not `restricted`."""
    roots: list[Path] = []
    for r in [studio_root, *host_folders, *settings.extra_allowed_dirs]:
        p = Path(os.path.expanduser(os.fspath(r)))
        if p not in roots:
            roots.append(p)
    return PathPolicy(tuple(roots), settings.allow_any_path and not restricted, restricted)
