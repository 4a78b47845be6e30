"""Cohort training: many trials trained at once as one stacked model.

Imports torch alone (no Optuna, MLflow or scikit-learn): the GPU benchmark runs it bare.
"""

from study.cohort.engine import Cohort as Cohort
from study.cohort.engine import Member as Member
from study.cohort.optim import StackedOptimizer as StackedOptimizer
from study.cohort.schedule import MemberSchedules as MemberSchedules
from study.cohort.stack import StackedModel as StackedModel
