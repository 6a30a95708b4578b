"""Errors SILA raises: each message names what went wrong and how to fix it."""

from __future__ import annotations


class SilaError(Exception):
    """Base class: a failure the CLI reports as a clean message (no traceback)."""


class LakeError(SilaError):
    """The lake or a table is missing, unreadable or inconsistent."""


class ContractError(SilaError):
    """A stage broke its declared contract (inputs, outputs, types, row counts, ownership)."""


class StageNotFound(SilaError):
    """No stage with that name, file path or module path."""


class StaleColumnsError(SilaError):
    """A stage's code changed since its columns were computed; a plain run would mix versions."""


class StageFailed(SilaError):
    """A stage raised for every row of a segment: a bug, not bad data. Nothing was committed."""


class LeaseLost(SilaError):
    """Another worker holds a newer generation of this fragment's lease: stop, commit nothing."""


class RowError(Exception):
    """Raised by a stage for one row: the row gets `<stage>_error` and null outputs, the job goes on.

    Example::

        if frame is None:
            raise RowError("no decodable video frame")
    """


class MediaError(SilaError):
    """A file is not usable media; the message says why (zero-byte, corrupt, ...).

    ``stderr`` holds ffmpeg's error output when the error comes from ``sila.media.run_ffmpeg``.
    A stage's per-row loop records it as the row's error, like ``RowError``.
    """

    def __init__(self, message: str, *, stderr: str | None = None) -> None:
        super().__init__(message)
        self.stderr = stderr
