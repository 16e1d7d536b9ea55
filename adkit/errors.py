"""The errors adkit reports to a user as one line: `adkit: error: <file>: <what> — <fix>`.

`UsageError` (exit code 2) is a bad argument; every other `AdkitError` (exit code 1) is a bad file or a
failure of the run. `describe` turns the errors of the libraries we call (safetensors, pickle, JSON, disk
full) into such a line; `adkit.cli` prints it, or the traceback with `--debug` / `ADKIT_DEBUG=1`.
"""

from __future__ import annotations

import errno
import json
import pickle
import sys


class AdkitError(Exception):
    """A failure to report in one line; exit code 1."""

    exit_code = 1


class UsageError(AdkitError, ValueError):
    """A bad command-line argument or option; exit code 2. Nothing has been written."""

    exit_code = 2


class SettingsError(AdkitError, ValueError):
    """A settings file (run folder, checkpoint) that is not what adkit wrote, or does not belong to its run."""


class RunLocked(AdkitError):
    """Another process is training into the same run folder."""


def describe(err: BaseException) -> tuple[str, int]:
    """The one-line message and exit code for an exception raised under an adkit command."""
    if isinstance(err, AdkitError):
        return str(err), err.exit_code
    # the data and backbone errors carry their file and fix already; their modules are loaded if they raised
    ours = [
        getattr(sys.modules.get(m), n, None)
        for m, n in (("adkit.data.core", "DataError"), ("adkit.backbones", "BackboneUnavailable"))
    ]
    if isinstance(err, tuple(c for c in ours if c is not None)):
        return str(err), 1
    if isinstance(err, json.JSONDecodeError):
        return f"{_where(err)}not valid JSON ({err.msg}, line {err.lineno}) — fix or delete the file", 1
    if isinstance(err, pickle.UnpicklingError):
        return (
            f"{_where(err)}refused to unpickle ({err}) — adkit reads only safetensors, JSON and plain tensor files",
            1,
        )
    if type(err).__name__ == "SafetensorError":
        return f"{_where(err)}not a valid safetensors file ({err}) — the file is damaged; re-create it", 1
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"{err.filename or 'disk'}: no space left on the device — free some space and run the command "
            "again (earlier results are intact)",
            1,
        )
    if isinstance(err, OSError) and err.filename:
        return f"{err.filename}: {err.strerror or err} — check the path and its permissions", 1
    if isinstance(err, (FileNotFoundError, ValueError, KeyError)):
        return str(err).strip("'\""), 1
    return (f"internal error ({type(err).__name__}: {err}) — run again with --debug for the traceback and report it"), 1


def _where(err: BaseException) -> str:
    path = getattr(err, "adkit_path", None)
    return f"{path}: " if path else ""


def with_path(err: BaseException, path) -> BaseException:
    """Attach the file an error came from, so `describe` can name it."""
    try:
        err.adkit_path = str(path)
    except AttributeError:
        pass
    return err
