"""One error normalisation for media: whatever PyAV or ffmpeg raise becomes a `MediaError`
whose message names the user's own path, never a scratch copy."""

from __future__ import annotations

import os

import av

from sila.errors import MediaError


def reason(exc: BaseException) -> str:
    """The cause of a PyAV/OS error in a few words (PyAV appends ": '<path>'"; callers name
    the path themselves)."""
    msg = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(msg).split(": '")[0]


def open_failure(exc: BaseException, path: str, shown: str) -> MediaError:
    """The MediaError for a file PyAV could not open: ingest's diagnosis (missing, truncated,
    not media, ...) when `probe` has one, else ffmpeg's reason."""
    from sila.media.probing import probe

    if isinstance(exc, MediaError):
        return exc
    try:
        probe(path, display=shown)
    except MediaError as diagnosed:
        return MediaError(f"ffmpeg could not open the media: {diagnosed}")
    return MediaError(f"ffmpeg could not open the media: {reason(exc)}: {shown}")


def decode_failure(exc: BaseException, shown: str, what: str = "video") -> MediaError:
    """The MediaError for a stream that opened but does not decode."""
    return MediaError(f"ffmpeg could not decode the {what}: {reason(exc)}: {shown}")


# what PyAV raises while opening or decoding a broken file
DECODE_ERRORS: tuple[type[BaseException], ...] = (av.FFmpegError, OSError, ValueError)


def user_message(
    e: BaseException,
    path: str | None,
    source_id: str | None,
    uri: str | None,
    what: str = "the input file",
) -> str:
    """A stage's row error as the user should read it: naming the source id and their own path
    (``uri``), never the scratch copy (``path``) the stage was handed (without a ``uri`` it
    is called `what`)."""
    msg = str(e)
    if path:
        shown = uri or what
        msg = msg.replace(os.path.abspath(path), shown).replace(path, shown)
    if not uri and not source_id:
        return msg
    where = f"source {source_id}" if source_id else "source"
    return f"{msg} ({where}: {uri})" if uri and uri not in msg else f"{msg} ({where})"
