"""User-facing errors.

Every problem a user can cause (bad flag, bad search-space file, missing data, unreachable
cluster) is raised as `SkdError` with the problem and the fix, so the CLI prints exactly one
line and exits non-zero instead of dumping a traceback from deep inside Ray.
"""

from __future__ import annotations

import codecs
import errno
import os
from collections.abc import Iterable
from pathlib import Path


class SkdError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} -- {fix}" if fix else problem)


class ConfigError(SkdError):
    """Invalid configuration value or search-space entry."""


class DataError(SkdError):
    """Dataset missing or unreadable."""


class DiskFull(SkdError):
    """The disk (or quota) holding a search's files is full: the search is interrupted, not
    failed, and continues with `--resume` once space is back."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        super().__init__(problem, fix or "free space (or raise the quota), then continue with --resume and the "
                                         "same --storage and --experiment")


class TrainingDiverged(SkdError):
    """The loss became NaN or infinite; the trial cannot continue."""


class GpuShareExceeded(SkdError):
    """A trial given a fraction of a GPU (`--gpus-per-worker` below 1) needed more memory than
    its share. Its allocator is capped at that share, so it fails alone instead of starving the
    trials packed beside it; a retry would need the same memory, so it is not retried."""


def ensure_writable_directory(directory: str | Path, what: str, option: str, files: Iterable[str] = ()) -> Path:
    """Create `directory` if needed and check it can be written, before any work is spent on
    what will go there; `what` names it in the error, `option` is the flag that sets it, and
    `files` are the names written into it (see `check_output_folder`)."""
    check_output_folder(directory, what, option, files)
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SkdError(f"{what} {directory} cannot be created ({err.strerror})",
                       f"pass {option} with a writable directory") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SkdError(f"{what} {directory} is not writable", f"pass {option} with a writable directory")
    return path


# What POSIX guarantees at least, for a file system whose limits pathconf cannot tell.
NAME_MAX_FALLBACK = 255
PATH_MAX_FALLBACK = 4096


def shortened(text: str, keep: int = 60) -> str:
    """`text` with its middle cut out when longer than `keep` characters: an error line that
    quotes a 500-character name in full hides the rest of what it says."""
    if len(text) <= keep:
        return text
    half = (keep - 5) // 2
    return f"{text[:half]}[...]{text[-half:]}"


def nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists (a root always does); never raises, even for
    names the file system refuses."""
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def name_limits(directory: Path) -> tuple[int, int]:
    """(longest name, longest path including its terminating NUL) in bytes on the file system
    holding `directory`, as the system reports them (a negative answer means no limit)."""
    limits = []
    for key, fallback in (("PC_NAME_MAX", NAME_MAX_FALLBACK), ("PC_PATH_MAX", PATH_MAX_FALLBACK)):
        try:
            value = os.pathconf(directory, key)
        except (OSError, ValueError, AttributeError):  # no pathconf (Windows), or no answer for this name
            value = fallback
        limits.append(value if value > 0 else 2**31)
    return limits[0], limits[1]


def check_path_fits(path: str | Path, what: str, fix: str, reserve: int = 0,
                    error: type[SkdError] = SkdError) -> None:
    """Refuse `path` when a name in it that does not exist yet is longer than the file system
    at its nearest existing folder allows, or when the whole path (plus `reserve` bytes for
    what will be written inside it) is longer than a path may be. The system would refuse it
    too, but only once something is opened or created (and `Path.exists` raises instead of
    answering), which may be after Ray has started or after part of a search's files are
    written; `what` and `fix` name the input in the `error` raised."""
    full = Path(os.path.abspath(path))
    base = nearest_existing(full)
    name_max, path_max = name_limits(base if os.path.isdir(base) else base.parent)
    for part in full.relative_to(base).parts:
        size = len(os.fsencode(part))
        if size > name_max:
            raise error(f"{what} {shortened(str(path))} is too long: the name {shortened(part)!r} has {size} bytes, "
                        f"more than the {name_max} the file system at {base} allows", fix)
    size = len(os.fsencode(str(full)))
    if size + reserve > path_max - 1:
        inside = f" and {reserve} more for what is written inside it" if reserve else ""
        raise error(f"{what} {shortened(str(path))} is too long: its path has {size} bytes{inside}, more than "
                    f"the {path_max - 1} the file system at {base} allows", fix)


def check_output_folder(directory: str | Path, what: str, option: str, files: Iterable[str] = ()) -> None:
    """Before anything is written: `directory` (a folder that may not exist yet) fits the file
    system, neither it nor a folder above it is an existing file (which `mkdir` would only
    refuse after other work is done), and none of the `files` it will get is a folder there.
    Creates nothing."""
    check_path_fits(directory, what, f"pass {option} with a shorter path")
    full = Path(os.path.abspath(directory))
    base = nearest_existing(full)
    if os.path.isdir(base):
        taken = [name for name in files if os.path.isdir(full / name)]
        if taken:
            raise SkdError(f"{what} {directory} holds a folder named {taken[0]}, where a file of that name is written",
                           f"pass {option} with another folder, or move that folder away")
        return
    if base == full:
        raise SkdError(f"{what} {directory} is an existing file, not a folder",
                       f"pass {option} with a folder, or a path that does not exist yet (the file is left as it is)")
    raise SkdError(f"{what} {directory} cannot be created: {base} is a file, not a folder",
                   f"pass {option} with a path under a folder")


def check_output_file(path: str | Path, what: str, option: str) -> None:
    """Before anything is written: the file `path` (which may not exist yet) fits the file
    system, is not an existing folder, and no folder above it is an existing file."""
    check_path_fits(path, what, f"pass {option} with a shorter path")
    full = Path(os.path.abspath(path))
    if os.path.isdir(full):
        raise SkdError(f"{what} {path} is a folder, not a file", f"pass {option} with a file name in that folder")
    base = nearest_existing(full.parent)
    if not os.path.isdir(base):
        raise SkdError(f"{what} {path} cannot be created: {base} is a file, not a folder",
                       f"pass {option} with a path under a folder")


# Byte-order marks an editor may put first, longest first (UTF-32's starts like UTF-16's).
BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def decode_text(data: bytes, path: str | Path, what: str, fix: str | None = None) -> str:
    """The text of a user's file: UTF-8, with or without a byte-order mark (Windows editors
    write one), or UTF-16/32 after their mark. Anything else (Latin-1, Windows-1252) is one
    SkdError naming the first undecodable byte by line and column, instead of a
    UnicodeDecodeError from deep inside a parser, or mojibake read in the locale's encoding."""
    bom, encoding = next(((bom, name) for bom, name in BOMS if data.startswith(bom)), (b"", "utf-8"))
    body = data[len(bom):]
    try:
        return body.decode(encoding)
    except UnicodeDecodeError as err:
        name = encoding.upper().rsplit("-", 1)[0] if encoding != "utf-8" else "UTF-8"
        where = f"byte 0x{body[err.start]:02x} at offset {len(bom) + err.start}"
        if encoding == "utf-8":
            line_start = body.rfind(b"\n", 0, err.start) + 1
            line = body.count(b"\n", 0, err.start) + 1
            column = len(body[line_start:err.start].decode(encoding)) + 1  # what precedes it decodes
            where = f"byte 0x{body[err.start]:02x} at line {line}, column {column}"
        default = ("save it as UTF-8, e.g. iconv -f latin1 -t utf-8 OLD > NEW" if name == "UTF-8" else
                   f"save it again, as UTF-8 (its {name} text is cut short or damaged)")
        raise SkdError(f"{what} {path} is not {name} text ({where})", fix or default) from None


def read_text_file(path: str | Path, what: str, fix: str | None = None) -> str:
    """`decode_text` of the file at `path`; an OSError is the caller's to turn into its error."""
    return decode_text(Path(path).read_bytes(), path, what, fix)


DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# How a full disk reads once SQLite, SQLAlchemy or Ray have turned the OSError into text.
DISK_FULL_TEXT = ("No space left on device", "database or disk is full", "Disk quota exceeded")


def exception_chain(err: BaseException) -> list[BaseException]:
    """`err` and every exception it was raised from or while handling (no repeats)."""
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_disk_full(err: BaseException) -> bool:
    """True when `err`, or what caused it, is a full disk or an exhausted quota. A search that
    ends so is interrupted, not failed: it continues with `--resume` once space is back."""
    for e in exception_chain(err):
        if isinstance(e, DiskFull):
            return True
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return True
        if any(text in str(e) for text in DISK_FULL_TEXT):
            return True
    return False
