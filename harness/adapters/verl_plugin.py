"""verl's plugin hook for advbench (pyproject: entry point ``advbench`` in group "verl.plugins").

``import verl`` imports this module in every process, its Ray workers included, which registers
advbench's estimators and losses in verl's registries (``advbench.harness.adapters.verl``). verl
swallows a plugin's errors at debug level, so a failure is logged here as an error first.
"""

import logging

try:
    from advbench.harness.adapters.verl import register

    register()
except Exception:
    logging.getLogger("advbench").exception("advbench's verl plugin could not register its estimators")
    raise
