import errno

"""The error a config that cannot run raises: its own module, so that every part of the harness
(config, plugins, tasks, ...) can raise it without importing the others."""


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and the valid choices."""


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk: an OS error, or SQLite's own words."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "database or disk is full" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
