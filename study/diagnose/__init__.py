"""The detectors and the one-line diagnosis: pure functions of a trial's epoch metrics.

May import: study.train.engine_types and study.errors only.
"""
