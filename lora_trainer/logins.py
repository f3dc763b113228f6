"""Who may open the standalone studio when it is served beyond this computer.

The studio reads and writes the files of the computer it runs on, so `--listen` without
credentials would hand that to everyone on the network. The credentials are written as the
WebUI's `--gradio-auth` and `--gradio-auth-path` take them: `user:password`, several separated by
commas, and in a file one or more per line. Inside the WebUI none of this applies: the WebUI's
own flags guard its page, our tab included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import StudioError

Credentials = list[tuple[str, str]]


def parse_credentials(text: str, where: str = "--auth") -> Credentials:
    """`user:password` pairs separated by commas or line breaks (a password may contain ':')."""
    pairs = []
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise StudioError(f"{where}: {user or item[:1] + '…'!r} is not written as user:password.",
                              "Write each login as user:password, several separated by commas.")
        pairs.append((user, password))
    return pairs


def read_credentials(auth: str | None, auth_file: str | None) -> Credentials:
    pairs = parse_credentials(auth, "--auth") if auth else []
    if auth_file:
        path = Path(auth_file)
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise StudioError(f"The login file {path} can not be read ({e.__class__.__name__}).",
                              "Give a UTF-8 text file with one user:password per line.") from None
        pairs += parse_credentials(text, str(path))
    return pairs


@dataclass(frozen=True)
class ServeAccess:
    """Where the studio listens and who may open it."""

    listen: bool = False
    logins: tuple[tuple[str, str], ...] = ()
    insecure_open: bool = False

    @classmethod
    def decide(cls, listen: bool, auth: str | None = None, auth_file: str | None = None,
               insecure_open: bool = False) -> ServeAccess:
        """The access asked for, or a StudioError when --listen would serve the studio open."""
        logins = tuple(read_credentials(auth, auth_file))
        if (auth or auth_file) and not logins:
            raise StudioError("The login list is empty.", "Give at least one user:password.")
        if listen and not logins and not insecure_open:
            raise StudioError(
                "--listen would let everyone who can reach this computer open the studio, and with it "
                "read and change files here.",
                "Add --auth user:password (or --auth-file FILE), or --insecure-open if the network is yours alone.",
            )
        return cls(listen, logins, insecure_open)

    @property
    def host(self) -> str:
        return "0.0.0.0" if self.listen else "127.0.0.1"

    def warning(self) -> str | None:
        if self.listen and not self.logins:
            return ("WARNING: --insecure-open: anyone who can reach this computer can open the studio "
                    "without a password.")
        return None
