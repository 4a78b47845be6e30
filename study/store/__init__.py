"""What a study keeps in Optuna's storage: opening and resuming it against its identity, the
study record (record: every attribute key, the record's version and its migration), the
evaluated result, worker liveness and the evaluation claim, provenance, store URL checks and
the redaction of their passwords. Every use of Optuna's private API is in optuna_private.

May import: study.config, study.search, study.errors, Optuna; never torch, so that reading a
study (`mnist-study report`) stays light.
"""
