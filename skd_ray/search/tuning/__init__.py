"""The Tune driver of a search and what surrounds it: building and running the Tuner with
Optuna and ASHA (`tuner`), the searchers (`optuna_study`, and `points` for fixed trial lists),
one number per trial (`numbering`), the driver-side callbacks (`callbacks`), the answer written
to MLflow (`answer`) and closing what an interrupted search opened (`closing`). Importing this
face loads nothing; `tuner` loads Ray."""
