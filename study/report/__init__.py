"""What a person reads: the console summary, the study report (data gathered, then rendered
as one offline HTML file, its verdicts) and publishing it with the registered model.

May import: study.store, study.diagnose, study.search, study.tracking and study.errors.
"""
