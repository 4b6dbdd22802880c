"""The one vocabulary of trial and search statuses, and the rules that use it.

A trial's status is the `skd.status` tag of its MLflow run, the `skd_status` user attribute of
its Optuna trial, a mark in its run name and a colour in the plots; a search's status is the
same tag on its parent run. Every writer and reader takes the words and the rules from here,
so a reader never waits for a word no writer uses.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """What became of a trial, or of a search (its parent run)."""

    RUNNING = "running"
    COMPLETED = "completed"  # a trial: every epoch trained; a search: every trial ended without error
    EARLY_STOPPED = "early_stopped"  # a trial ASHA stopped: its best epoch still counts
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # Ctrl-C or a full disk: `resume` continues it
    COMPLETED_WITH_ERRORS = "completed_with_errors"  # a search some of whose trials failed


# Trials that may be chosen as a search's best configuration (leaderboard, export, final
# evaluation, comparison): they ended on their own, with a measured value.
SELECTABLE = (Status.COMPLETED, Status.EARLY_STOPPED)
# Searches (and comparisons) that ended: nothing is left to resume.
FINISHED_SEARCH = (Status.COMPLETED, Status.COMPLETED_WITH_ERRORS, Status.FAILED)
# Runs a resumed search opens again.
REOPENED = (Status.RUNNING, Status.INTERRUPTED)
# What MLflow's own run status says for each (anything else is FINISHED).
MLFLOW_RUN_STATUS = {Status.FAILED: "FAILED", Status.INTERRUPTED: "KILLED"}


def trial_outcome(failed: bool, epochs: int, max_epochs: int) -> Status:
    """How a trial that ended is called: failed, completed (trained every epoch) or
    early_stopped (ASHA stopped it before its last epoch)."""
    if failed:
        return Status.FAILED
    return Status.COMPLETED if epochs >= max_epochs else Status.EARLY_STOPPED


def mlflow_run_status(status: str) -> str:
    """MLflow's run status for a final skd-ray status."""
    return MLFLOW_RUN_STATUS.get(status, "FINISHED")
