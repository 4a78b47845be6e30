"""Helpers shared by several test modules (test modules never import each other)."""

from __future__ import annotations

# Synthetic training images for a study on the default search space: `run` refuses batch sizes
# larger than the train split, and the largest default one (1024) must fit a 3:1 holdout split
# (1575 train images) and each fold of a 2-fold cross-validation (1050).
STUDY_TRAIN_IMAGES = 2100
