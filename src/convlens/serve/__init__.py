"""``convlens serve``: a local web explorer of any CNN on your own images, offline.

The page (``static/``: plain HTML, CSS and JavaScript, no build step, nothing loaded from the
network) is a thin client of the JSON API in :mod:`convlens.serve.app`, which calls the same core
functions as the CLI and returns the same dataclass serializations.

Example:
    >>> from fastapi.testclient import TestClient
    >>> explorer = Explorer.for_model("resnet18", bundled=False)
    >>> TestClient(create_app(explorer)).get("/api/status").json()["model"]
    'resnet18'
    >>> explorer.close()
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable
from typing import Any

from convlens.serve.app import STATIC_DIR, Explorer, create_app

__all__ = ["Explorer", "create_app", "serve", "STATIC_DIR", "is_loopback"]


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, localhost).

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    explorer: Explorer,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    on_ready: Callable[[str], None] | None = None,
    log_level: str = "warning",
) -> None:
    """Run the explorer with uvicorn until Ctrl-C (or SIGTERM); then stop jobs and remove temp files.

    ``on_ready(url)`` is called once the socket is listening. Binding anywhere but loopback prints a
    warning to stderr: the explorer has no authentication.
    """
    import uvicorn

    if not is_loopback(host):
        print(
            f"warning: binding to {host}: anyone who can reach this machine on port {port} can use the explorer "
            "(no authentication). Use --host 127.0.0.1 unless you mean it.",
            file=sys.stderr,
        )
    app = create_app(explorer)
    # bind first so a busy port is one clear error, then hand the socket to uvicorn
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        from convlens.errors import InputError

        raise InputError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port.") from None
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off")
    server = _Server(config)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/"
    server.ready_callback = (lambda: on_ready(url)) if on_ready else None
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        explorer.close()


class _Server:
    """uvicorn.Server with a hook when startup is done (the URL is printed only once it answers)."""

    def __init__(self, config: Any) -> None:
        import uvicorn

        class S(uvicorn.Server):
            ready_callback: Callable[[], None] | None = None

            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets=sockets)
                if self.started and self.ready_callback is not None:
                    self.ready_callback()

        self._server = S(config)

    @property
    def ready_callback(self) -> Callable[[], None] | None:
        return self._server.ready_callback

    @ready_callback.setter
    def ready_callback(self, fn: Callable[[], None] | None) -> None:
        self._server.ready_callback = fn

    def run(self, sockets: list[socket.socket]) -> None:
        self._server.run(sockets=sockets)
