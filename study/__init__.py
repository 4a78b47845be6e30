"""Optuna studies for the MNIST network: search space, objective, training, runner, CLI."""
