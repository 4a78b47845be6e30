"""Cohort training: many trials trained at once as one stacked model.

Imports torch alone (no Optuna, MLflow or scikit-learn): the GPU benchmark runs it bare.
"""

from study.train.cohort.engine import Cohort as Cohort
from study.train.cohort.engine import Member as Member
from study.train.cohort.optim import StackedOptimizer as StackedOptimizer
from study.train.cohort.schedule import MemberSchedules as MemberSchedules
from study.train.cohort.stack import StackedModel as StackedModel
