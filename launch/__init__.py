"""``suhmo-search``: SUHMo hyperparameter searches with Ray Tune + Optuna (the only package
importing ray and optuna).

Modules: ``space`` (search-space files: validation, define-by-run Optuna space), ``trainable``
(the Tune function trainable around ``suhmo.train.Trainer``), ``runner`` (Tuner, restore,
status, leaderboard), ``progress`` (one line per trial event), ``cli`` (the click group).
"""
