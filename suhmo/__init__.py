"""SUHMo: autoregressive GAN for semantic unconditional head-motion generation.

This package is the model library: data, models, training, metrics, generation and
rendering. It imports no ray, optuna or mlflow (see ``launch/`` and ``tracking/``).
"""

import os as _os

# libgomp's default (spinning) wait policy makes 2 torch threads stall on every parallel op
# when the cores are shared (Ray trials, other jobs): measured 24.6 s vs 0.45 s for one small
# Transformer iteration on a loaded 2-core machine (benchmarks/train_step.py). It must be set
# before torch is imported; a value already in the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
