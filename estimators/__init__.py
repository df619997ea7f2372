"""The advantage-estimator registry: ``names()``, ``get(name)``, ``register(...)``.

Each family lives in its own module; importing the package imports every module of this folder,
which registers them all: a new family is a new file, nothing else to edit.
"""

from advbench.estimators.registry import (
    AdvantageBatch,
    Estimator,
    NoParams,
    TrainingSignals,
    get,
    import_folder,
    names,
    register,
)

import_folder(__name__, __path__)  # importing a module registers what it holds

__all__ = ["AdvantageBatch", "Estimator", "NoParams", "TrainingSignals", "get", "names", "register"]
