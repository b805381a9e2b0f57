"""Value types shared by every config section: secrets and listen addresses.

A secret is written as the value itself, or as `{ file = "PATH" }` or
`{ env = "NAME" }` so that it need not sit in the config file; systemd's
`$CREDENTIALS_DIRECTORY` is expanded in file paths (LoadCredential=).

A listen address is "HOST:PORT", "unix:PATH", or "systemd:NAME": the listening
socket systemd passed under that FileDescriptorName= (socket activation), which
lets helpline serve port 25 without privileges and restart without refusing a
connection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, SecretStr


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve_secret(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value
    if isinstance(value, str):
        if not value:
            raise ValueError("a secret cannot be empty")
        return value
    if isinstance(value, dict):
        if set(value) == {"file"} and isinstance(value["file"], str):
            raw = value["file"]
            creds = os.environ.get("CREDENTIALS_DIRECTORY", "")
            if "$CREDENTIALS_DIRECTORY" in raw or "${CREDENTIALS_DIRECTORY}" in raw:
                if not creds:
                    raise ValueError(
                        f"{raw!r} names $CREDENTIALS_DIRECTORY, which is not set "
                        "(it is set by systemd's LoadCredential=)"
                    )
                raw = raw.replace("${CREDENTIALS_DIRECTORY}", creds).replace(
                    "$CREDENTIALS_DIRECTORY", creds
                )
            try:
                text = Path(raw).read_text(encoding="utf-8").strip()
            except OSError as err:
                raise ValueError(f"cannot read secret file {raw}: {err.strerror}") from err
            if not text:
                raise ValueError(f"secret file {raw} is empty")
            return text
        if set(value) == {"env"} and isinstance(value["env"], str):
            name = value["env"]
            text = os.environ.get(name, "")
            if not text:
                raise ValueError(f"environment variable {name} is not set or empty")
            return text
    raise ValueError('a secret is a string, { file = "PATH" } or { env = "NAME" }')


Secret = Annotated[SecretStr, BeforeValidator(_resolve_secret)]


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where a listener binds: TCP host and port, a unix socket path, or the name of a
    socket systemd passed (then nothing is bound: the socket is taken as it is)."""

    host: str = ""
    port: int = 0
    path: str = ""
    fd_name: str = ""

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    @property
    def is_systemd(self) -> bool:
        return bool(self.fd_name)

    def __str__(self) -> str:
        if self.fd_name:
            return f"systemd:{self.fd_name}"
        if self.path:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen(value: Any) -> ListenAddress:
    if isinstance(value, ListenAddress):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError('a listen address is "HOST:PORT", "unix:PATH" or "systemd:NAME"')
    if value.startswith("systemd:"):
        return ListenAddress(fd_name=_fd_name(value))
    if value.startswith("unix:"):
        path = value[5:]
        if not path.startswith("/"):
            raise ValueError(f"{value!r}: the unix socket path must be absolute")
        return ListenAddress(path=path)
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f'{value!r} is not "HOST:PORT", "unix:PATH" or "systemd:NAME"')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: the port must be a number from 0 to 65535")
    return ListenAddress(host=host, port=int(port_text))


def _fd_name(value: str) -> str:
    """The NAME of "systemd:NAME", checked as systemd checks FileDescriptorName=."""
    name = value[len("systemd:") :]
    if not name:
        raise ValueError(
            f"{value!r}: name the socket, as its unit's FileDescriptorName= does "
            '(e.g. "systemd:smtp")'
        )
    if len(name) > 255 or any(not " " <= c <= "~" or c == ":" for c in name):
        raise ValueError(
            f"{value!r}: a socket name is 1 to 255 printable ASCII characters without ':'"
        )
    return name


Listen = Annotated[ListenAddress, BeforeValidator(parse_listen)]
