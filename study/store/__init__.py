"""What a study keeps in Optuna's storage: opening and resuming it against its identity, the
record's keys and readers (record), the evaluated result, worker liveness and the evaluation
claim, provenance, store URL checks and the redaction of their passwords.

May import: study.config, study.search, study.errors, Optuna; never torch, so that reading a
study (`mnist-study report`) stays light.
"""
