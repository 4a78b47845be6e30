"""The engine: the one-trial training loop, cohorts of trials trained as one stacked model
(cohort/), augmentation, per-epoch signals, the device, and the vocabulary it shares with
everyone (engine_types: Hyperparams, TrainOptions, EpochMetrics).

Torch alone: it imports no Optuna and no MLflow (an import-linter contract holds that), and
of the study only study.errors.
"""
