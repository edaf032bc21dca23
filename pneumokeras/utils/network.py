"""Checking, before a server starts, that it can listen where it is told to."""

from __future__ import annotations

import errno
import socket

from pneumokeras.errors import UserError


def host_and_port(address: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 hosts in brackets allowed) → (host, port)."""
    host, _, port = address.strip().rpartition(":")
    return host.strip("[]"), int(port)


def check_can_listen(host: str, port: int, hint: str, host_hint: str) -> None:
    """Binds a throw-away socket to `host:port`: the server that follows will get it.

    Args:
        host: address to listen on (a name or an IP address).
        port: TCP port.
        hint: what the user can do about the port, appended to the message
            (`choose another --port`).
        host_hint: what the user can do about a host that is not this machine's.

    Raises:
        UserError: the port is in use, the host does not resolve, or it is not an
            address of this machine.
    """
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, _, _, where = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[
            0
        ]
    except socket.gaierror as err:
        raise UserError(f"cannot resolve {host!r} ({err.strerror}); {host_hint}") from None
    with socket.socket(family, kind) as probe:
        # A socket of an earlier server left in TIME_WAIT does not count as in use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(where)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise UserError(f"{shown} is in use; {hint}") from None
            if err.errno == errno.EADDRNOTAVAIL:
                raise UserError(f"{host} is not an address of this machine; {host_hint}") from None
            if err.errno == errno.EACCES:
                raise UserError(
                    f"{shown}: permission denied (a port below 1024?); {hint}"
                ) from None
            raise
