"""`MEMORY_AUTH`: whether requests must carry an API key.

- `required`: every route but `/health` and `/ready` needs a key;
- `off`: no key is asked for; the `Host` header must then be one of `MEMORY_ALLOWED_HOSTS`,
  so a web page cannot reach a loopback service through DNS rebinding;
- `auto` (the default): `off` when the service listens on loopback only, else `required`.

Listening beyond loopback with `off` is refused at start unless `MEMORY_AUTH_ALLOW_OPEN=1`,
and then warned about at every start.
"""

import ipaddress
import logging
from typing import Literal

from memory_service.core.errors import StartupError

log = logging.getLogger(__name__)

Mode = Literal["required", "off"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve(setting: str, host: str, allow_open: bool) -> Mode:
    """The mode for a service listening on `host`; StartupError for an open one not allowed."""
    loopback = is_loopback(host)
    mode: Mode
    if setting == "auto":
        mode = "off" if loopback else "required"
    elif setting in ("required", "off"):
        mode = "required" if setting == "required" else "off"
    else:
        raise StartupError(f"MEMORY_AUTH={setting!r}: use required, off or auto")
    if mode == "off" and not loopback:
        if not allow_open:
            raise StartupError(
                f"MEMORY_AUTH=off on {host}, which is not loopback: anyone who reaches the port "
                "could read and delete every memory. Create a key (`memory-service keys create`) "
                "and use MEMORY_AUTH=required, or set MEMORY_AUTH_ALLOW_OPEN=1 to accept that."
            )
        log.warning(
            "authentication is OFF on %s (MEMORY_AUTH_ALLOW_OPEN=1): every route is open to "
            "anyone who reaches this port",
            host,
        )
    return mode
