"""Cohort training: many trials trained at once as one stacked model (issue 11)."""

from study.cohort.optim import StackedOptimizer as StackedOptimizer
from study.cohort.schedule import MemberSchedules as MemberSchedules
