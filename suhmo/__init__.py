"""SUHMo: autoregressive GAN for semantic unconditional head-motion generation.

This package is the model library: data, models, training, metrics, generation and
rendering. It imports no ray, optuna or mlflow (see ``launch/`` and ``tracking/``).
"""

__version__ = "0.1.0"
