"""Plugins: estimators, losses and tasks from outside the repository.

Three ways in:

- an installed package's entry point in the group ``advbench.plugins``, naming a module; importing
  it registers its estimators and losses (``@estimators.register``, ``@losses.register``);
- an installed package's entry point in ``advbench.configs``, naming a package that holds config
  groups (``task/*.yaml``, ``model/*.yaml``, ...): searched after ``./configs``, before the shipped
  ones, so a plugin's tasks are ``task=<name>`` choices;
- the config key ``plugins`` (``--plugin`` on the command line): module names or ``.py`` paths,
  imported the same way; they travel with the run's config, so a worker that trains the run
  (a subprocess, a Ray task) loads them too.

Entry points are read from the installed packages' metadata, without importing them, so a config
error still comes back before torch is imported (``source_files`` lets the names be read first).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from advbench.harness.errors import ConfigError

PLUGIN_GROUP = "advbench.plugins"  # entry points: modules that register estimators and losses
CONFIG_GROUP = "advbench.configs"  # entry points: packages holding config groups (task/, model/...)


@functools.cache
def declared_entry_points(group: str) -> tuple[str, ...]:
    """What installed packages declare in ``group``, sorted; read once a process (scanning every
    installed distribution's metadata took half of a config's resolution, once per group file)."""
    return tuple(sorted(ep.value for ep in entry_points(group=group)))


def entry_point_modules() -> list[str]:
    """The modules installed packages declare in ``advbench.plugins``."""
    return list(declared_entry_points(PLUGIN_GROUP))


def config_packages() -> list[str]:
    """The config-group packages installed packages declare in ``advbench.configs``."""
    return list(declared_entry_points(CONFIG_GROUP))


def _is_path(ref: str) -> bool:
    return ref.endswith(".py") or "/" in ref


def load(plugins: Sequence[str] = ()) -> list[ModuleType]:
    """Import every entry-point plugin and ``plugins`` (module names or .py paths), once each."""
    return [_import(ref) for ref in [*entry_point_modules(), *plugins]]


@functools.cache
def _import(ref: str) -> ModuleType:
    try:
        if not _is_path(ref):
            return importlib.import_module(ref)
        path = Path(ref).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"config key 'plugins': no file '{ref}'")
        name = f"advbench_plugin_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    except ConfigError:
        raise
    except Exception as exc:  # the plugin's own error, named as the plugin's
        where = "config key 'plugins'" if ref not in entry_point_modules() else f"entry point {PLUGIN_GROUP}"
        raise ConfigError(f"{where}: plugin '{ref}' failed to load: {type(exc).__name__}: {exc}") from None


def source_files(plugins: Sequence[str] = ()) -> list[Path]:
    """The source files of every plugin, found without running them (a package: its folder's
    files), so the names they register can be read before anything is imported."""
    files: list[Path] = []
    for ref in [*entry_point_modules(), *plugins]:
        if _is_path(ref):
            files += [Path(ref).expanduser()] if Path(ref).expanduser().is_file() else []
            continue
        try:
            files += module_files(ref)
        except (ImportError, ValueError):
            raise ConfigError(f"config key 'plugins': no module '{ref}' is installed") from None
    return files


def module_files(module: str) -> list[Path]:
    """A module's source file, or every file of a package's folder, found without importing it
    (its parent packages are imported); ImportError when there is no such module."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise ImportError(f"no module named '{module}'")
    if spec.submodule_search_locations:
        return sorted(p for folder in spec.submodule_search_locations for p in Path(folder).glob("*.py"))
    return [Path(spec.origin)] if spec.origin and spec.origin.endswith(".py") else []
