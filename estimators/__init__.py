"""The advantage-estimator registry: ``names()``, ``get(name)``, ``register(...)``.

Each family lives in its own module; importing the package registers all of them.
"""

from estimators.registry import (
    AdvantageBatch,
    Estimator,
    NoParams,
    TrainingSignals,
    get,
    names,
    register,
)

# Importing a family module registers its estimators.
from estimators import (  # noqa: E402, F401  isort: skip
    fade,
    gpg,
    grpo,
    maxrl,
    opo,
    passk,
    reinforce,
    reinforce_pp,
    remax,
    risk,
    rloo,
    sign,
    unlikeliness,
)

__all__ = ["AdvantageBatch", "Estimator", "NoParams", "TrainingSignals", "get", "names", "register"]
