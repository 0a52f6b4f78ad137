# Why a provisioning request is refused. Either way the transport answers
# nothing (HTTP: the connection is closed), as protocomm does (docs/provisioning.md#request-model).


class Refused(Exception):
    """Malformed, out of order or not allowed: refused, nothing else happens."""


class AuthFailed(Refused):
    """A failed session handshake (bad key or proof): counted, and makes the next ones wait (protocomm.py)."""
