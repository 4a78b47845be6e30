"""The search: the space (the only trial.suggest_* site), the samplers and pruners, the budget
plan, the warm start (and which of its trials the pruner never judges) and early stopping.

May import: study.train's vocabulary (engine_types), study.diagnose, study.errors and Optuna;
never MLflow. study.run composes it with the engine and the trackers.
"""
