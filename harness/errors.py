"""The error a config that cannot run raises: its own module, so that every part of the harness
(config, plugins, tasks, ...) can raise it without importing the others."""


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and the valid choices."""
