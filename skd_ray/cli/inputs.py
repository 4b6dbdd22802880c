"""Checks of the command line's text and paths, before anything reads or writes them.

The system refuses some inputs only once something is opened or created: an argument that is
not UTF-8 reaches SQLite, MLflow or `print` as lone surrogates; a name longer than the file
system allows makes `Path.is_file` raise instead of answering (or `mkdir` fail after Ray has
started); an output folder that is an existing file is found once a leaderboard is printed or
a model rebuilt. Each is one `SkdError` here, called by `skd_ray.cli.flags.check_flags`.
`--storage` is checked where the modes that write there create it (`check_writable`): a
command that only reads MLflow must not fail on a storage it never touches.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from skd_ray.cli.common import REPO_ROOT
from skd_ray.errors import SkdError, check_output_folder, check_path_fits
from skd_ray.methods import get_method_spec
from skd_ray.results.artifacts import REPORT_FILE
from skd_ray.results.store import MlflowStore
from skd_ray.selection.export import EXPORT_FILES


def spelling(name: str, flag_names: Mapping[str, str] | None) -> str:
    """How the user typed option `name`: a subcommand's spelling (`flag_names`), else the
    combined form's `--name-with-dashes`."""
    return (flag_names or {}).get(name) or "--" + name.replace("_", "-")


def check_text(args: argparse.Namespace, flag_names: Mapping[str, str] | None = None) -> None:
    """Every text option is UTF-8. An argument that is not (typed in a Latin-1 terminal, or a
    file name made on one) reaches Python with lone surrogates in place of its bytes, which
    SQLite, MLflow and `print` refuse far from the flag that brought it, some after Ray started."""
    for name, value in vars(args).items():
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str):
                continue
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                shown = os.fsencode(item).decode("utf-8", "backslashreplace")
                raise SkdError(f"{spelling(name, flag_names)} '{shown}' is not UTF-8 text",
                               "type it in UTF-8 (set the terminal to UTF-8, or give the file a UTF-8 name)") \
                    from None


def check_paths(args: argparse.Namespace, flag_names: Mapping[str, str] | None = None) -> None:
    """Input names the file system could hold at all, output folders that fit it and are not
    files, a known --method (it names its space file, search_spaces/<method>.yaml) and an
    MLflow SQLite file that can be created under folders."""
    if args.config:
        for path in (Path(args.config), REPO_ROOT / args.config):  # where --config is looked for
            check_path_fits(path, "search-space file", f"pass {spelling('config', flag_names)} with an existing file")
    if args.method is not None:
        get_method_spec(args.method)
    if args.data_dir:
        check_path_fits(args.data_dir, "data directory", f"pass an existing {spelling('data_dir', flag_names)}")
    if args.report:
        check_output_folder(args.report, "report directory", spelling("report", flag_names), (REPORT_FILE,))
    if args.export_best is not None:
        check_output_folder(args.export_best, "export directory", spelling("export_best", flag_names), EXPORT_FILES)
    if args.mlflow_uri:
        MlflowStore(args.mlflow_uri).check_sqlite_path()


def check_inputs(args: argparse.Namespace, flag_names: Mapping[str, str] | None = None) -> None:
    """All checks of this module; `flag_names` spells an option as a subcommand does."""
    check_text(args, flag_names)
    check_paths(args, flag_names)
