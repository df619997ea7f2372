"""The advantage-estimator registry: ``names()``, ``get(name)``, ``register(...)``.

Each family lives in its own module; importing the package imports every module of this folder,
which registers them all: a new family is a new file, nothing else to edit.
"""

import importlib
import pkgutil

from advbench.estimators.registry import (
    AdvantageBatch,
    Estimator,
    NoParams,
    TrainingSignals,
    get,
    names,
    register,
)

for _module in pkgutil.iter_modules(__path__):  # importing a family module registers its estimators
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["AdvantageBatch", "Estimator", "NoParams", "TrainingSignals", "get", "names", "register"]
