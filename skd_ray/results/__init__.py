"""What a search leaves behind, written to and read back from MLflow.

Owns: every MLflow name (`names`: tags, artifacts), the runs of a search and its trials
(`tracking`: `SearchRuns`, `TrialTracker`), the leaderboard and the rule for which trials
count (`leaderboard`), the parent run's summary (`summary`), everything a report reads
(`search_data`), parameter importances, plots, the Markdown report and the artifacts logged on
the search's run.
May import: `errors`, `config`, `training` (metric names, early-exit trade-offs), MLflow,
Optuna (importances only) and matplotlib. Never Ray: a finished search is read without it.
"""
