"""One `mnist-study run`, composed: the runner's pipeline (prepare, plan, open, search,
evaluate, publish), the objective that glues a trial's suggestion, training, pruning and
tracking, the cohort driver, the seed recipe's baseline, the one test-set evaluation, the
console and the interrupt handling.

The composition root: it may import every other package of the study; none imports it but
study.cli.
"""
