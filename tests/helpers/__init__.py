"""Shared test helpers: fake searches in MLflow, hand-written losses, tiny models, sessions
that interrupt a run, a plain-torch reference loop and simulated clusters."""
