"""Probing: what a media file holds (kind, streams, size, rotation), or why it is not usable.

Probing uses PyAV (in-process, no ffprobe binary needed).
* ``Probe.width``/``Probe.height`` are the *stored* (coded) dimensions; the displayed
  dimensions are swapped when ``rotation`` is 90 or 270 (see ``Probe.display_size``).
* ``Probe.rotation`` is the clockwise rotation, in degrees (0/90/180/270), needed to show
  the picture upright, i.e. the legacy ``rotate`` tag convention (a portrait phone clip is
  ``90``). FFmpeg's display matrix stores the counter-clockwise angle, so a file written
  with ``ffmpeg -display_rotation -90`` probes as ``rotation=90``.
* Every problem with an input file surfaces as :class:`MediaError` with a human message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
from dataclasses import dataclass
from typing import Any

import av

from sila.errors import MediaError
from sila.media.sizes import display_size

# Leading bytes of container formats: a file starting with one of these that fails to
# open is reported as truncated/corrupt rather than "not a media file".
_MAGIC = (b"ftyp", b"RIFF", b"OggS", b"fLaC", b"ID3", b"\x1aE\xdf\xa3", b"FLV", b"GIF8")
_MAGIC_AT_0 = (b"\x89PNG", b"\xff\xd8\xff", b"\x00\x00\x00\x0cjP", b"II*\x00", b"MM\x00*")
_MAX_PACKETS = 300  # demux at most this many packets looking for a first decodable frame


@dataclass(frozen=True)
class Probe:
    """Technical metadata of one media file (see module docstring for conventions)."""

    kind: str  # "video" | "image" | "audio"
    container: str | None = None
    duration_s: float | None = None
    fps: float | None = None
    frame_count: int | None = None
    width: int | None = None
    height: int | None = None
    video_codec: str | None = None
    pix_fmt: str | None = None
    rotation: int | None = None
    bitrate: int | None = None
    has_audio: bool = False
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None

    @property
    def display_size(self) -> tuple[int, int] | None:
        """(width, height) as displayed, i.e. after applying ``rotation``."""
        return display_size(self.width, self.height, self.rotation)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def display_path(path: str | os.PathLike[str] | bytes) -> str:
    """A path as text that is always valid UTF-8: undecodable bytes of a file name are shown
    as ``\\xNN`` escapes (the raw bytes are kept elsewhere, e.g. ``sources.uri_bytes``)."""
    raw = path if isinstance(path, bytes) else os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace")


def _check_file(path: str, shown: str) -> tuple[int, bytes]:
    """Raise MediaError (naming ``shown``) unless ``path`` is a readable non-empty file;
    return (size, head)."""
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise MediaError(f"not a media file (is a directory): {shown}")
        if not stat.S_ISREG(st.st_mode):
            raise MediaError(f"not a media file (not a regular file): {shown}")
        if st.st_size == 0:
            raise MediaError(f"zero-byte file: {shown}")
        with open(path, "rb") as fh:
            return st.st_size, fh.read(4096)
    except FileNotFoundError:
        raise MediaError(f"file not found: {shown}") from None
    except PermissionError:
        raise MediaError(f"unreadable: permission denied: {shown}") from None
    except OSError as exc:
        raise MediaError(f"unreadable: {exc.strerror or exc}: {shown}") from None


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    for cut in range(4):  # tolerate a multi-byte character split at the end of the chunk
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return all(ch.isprintable() or ch in "\r\n\t\f\v" for ch in text)
    return False


def _has_media_magic(head: bytes) -> bool:
    return head.startswith(_MAGIC_AT_0) or any(head[:12].find(m) in (0, 4) for m in _MAGIC)


def _mp4_diagnosis(path: str, size: int) -> str | None:
    """Explain why an ISO-BMFF (mp4/mov) file fails to open by walking its top-level boxes."""
    seen: list[str] = []
    with open(path, "rb") as fh:
        pos = 0
        while pos + 8 <= size and len(seen) < 64:
            fh.seek(pos)
            hdr = fh.read(16)
            box_size, kind = int.from_bytes(hdr[:4], "big"), hdr[4:8].decode("latin-1")
            if box_size == 1 and len(hdr) == 16:
                box_size = int.from_bytes(hdr[8:16], "big")
            elif box_size == 0:
                box_size = size - pos
            if box_size < 8:
                return f"malformed '{kind}' box at byte {pos}"
            seen.append(kind)
            if pos + box_size > size:
                missing = "" if "moov" in seen else "; no 'moov' atom"
                return f"'{kind}' box runs {pos + box_size - size} bytes past end of file{missing}"
            pos += box_size
    return None if "moov" in seen else "no 'moov' atom (file was never finalised?)"


def _container_name(fmt_name: str, path: str) -> str:
    """Pick the demuxer alias matching the extension ("mov,mp4,m4a,..." -> "mp4")."""
    names = fmt_name.split(",")
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    return ext if ext in names else names[0]


def _num(value: Any) -> float | None:
    return float(value) if value is not None and float(value) > 0 else None


def _norm_rotation(degrees: float) -> int:
    return int(round(degrees / 90.0)) % 4 * 90


def _first_frame(container: Any, stream: Any) -> tuple[Any | None, int]:
    """Decode the first frame of ``stream``; return it and the number of packets seen.

    Demuxes on until a second packet shows up (a still has one) or the budget runs out.
    """
    frame, packets = None, 0
    for packet in container.demux(stream):
        if packet.size:
            packets += 1
        if frame is None:
            for decoded in packet.decode():
                frame = decoded
                break
        if (frame is not None and packets >= 2) or packets >= _MAX_PACKETS:
            break
    return frame, packets


def probe(path: str | os.PathLike[str], *, display: str | None = None) -> Probe:
    """Inspect ``path`` with PyAV; raise MediaError for anything that is not usable media.

    Only the first frame is decoded (demuxing at most a few hundred packets to find it).
    Messages name ``display`` (the user's own path, e.g. the object-store URI of a downloaded
    copy), else ``path`` with undecodable bytes escaped.
    """
    spath = os.fspath(path)
    shown = display or display_path(spath)
    size, head = _check_file(spath, shown)
    if _looks_like_text(head) and not _has_media_magic(head):
        raise MediaError(f"not a media file (text file): {shown}")
    try:
        # "file:" keeps names like "concat:a|b" or "http:x" from selecting a protocol
        container = av.open("file:" + os.path.abspath(spath), metadata_errors="replace")
    except av.error.PermissionError:
        raise MediaError(f"unreadable: permission denied: {shown}") from None
    except Exception as exc:  # noqa: BLE001 - PyAV raises many types; normalise them
        reason = _reason(exc)
        if head[4:8] == b"ftyp":
            with contextlib.suppress(OSError):
                reason = _mp4_diagnosis(spath, size) or reason
        if too_big := _oversized_image(head):
            raise MediaError(f"{too_big}: {shown}") from exc
        if _has_media_magic(head):
            raise MediaError(f"truncated or corrupt: {reason}: {shown}") from exc
        raise MediaError(f"not a media file (unrecognised format: {reason}): {shown}") from exc
    try:
        return _probe_open(container, spath, shown)
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001
        if too_big := _oversized_image(head):
            raise MediaError(f"{too_big}: {shown}") from exc
        raise MediaError(f"truncated or corrupt: {_reason(exc)}: {shown}") from exc
    finally:
        container.close()


# av_image_check_size(): ffmpeg refuses a picture when 8*(w+128)*(h+128) reaches INT_MAX.
_FFMPEG_PIXEL_LIMIT = (2**31 - 1) // 8


def _oversized_image(head: bytes) -> str | None:
    """Name a PNG whose header dimensions are beyond what ffmpeg will decode, else None."""
    if not head.startswith(b"\x89PNG\r\n\x1a\n") or head[12:16] != b"IHDR":
        return None
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if (w + 128) * (h + 128) < _FFMPEG_PIXEL_LIMIT:
        return None
    return (
        f"image too large for ffmpeg: {w}x{h} pixels is over its limit of about "
        f"{_FFMPEG_PIXEL_LIMIT // 10**6} megapixels (downscale or tile it before ingest)"
    )


def _reason(exc: BaseException) -> str:
    msg = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(msg).split(": '")[0]  # PyAV appends ": '<path>'"; the caller adds the path


def pick_default(streams: list[Any]) -> Any | None:
    """The stream marked default, else the first: players and ffmpeg's own choice differ, and
    a file whose second stream is the default means that one (every stage reads this one)."""
    default = av.stream.Disposition.default
    for s in streams:
        if s.disposition & default:
            return s
    return streams[0] if streams else None


def _probe_open(container: Any, spath: str, shown: str) -> Probe:
    attached = av.stream.Disposition.attached_pic
    videos = [s for s in container.streams.video if not (s.disposition & attached)]
    audios = list(container.streams.audio)
    # the facts of the streams the stages read, not of stream 0
    vstream, astream = pick_default(videos), pick_default(audios)
    if not videos and not audios:
        raise MediaError(f"not a media file (no audio/video streams): {shown}")
    fmt_name = container.format.name
    duration = container.duration / 1e6 if container.duration and container.duration > 0 else None
    fields: dict[str, Any] = {
        "container": _container_name(fmt_name, spath),
        "bitrate": int(container.bit_rate) if container.bit_rate else None,
        "has_audio": bool(audios),
    }
    if astream is not None:
        acc = astream.codec_context
        fields.update(
            audio_codec=acc.codec.canonical_name,
            sample_rate=acc.sample_rate or None,
            channels=acc.channels or None,
        )
    if not videos:
        frame, packets = _first_frame(container, astream)
        if frame is None and packets == 0:
            raise MediaError(f"empty audio: the audio stream holds no samples: {shown}")
        if frame is None:
            raise MediaError(f"truncated or corrupt: no decodable audio frame: {shown}")
        if duration is None and astream.duration:
            duration = float(astream.duration * astream.time_base)
        return Probe(kind="audio", duration_s=duration, **fields)

    vcc = vstream.codec_context
    frame, packets = _first_frame(container, vstream)
    if frame is None and packets == 0:
        raise MediaError(f"empty video: the video stream holds no frames: {shown}")
    if frame is None:
        raise MediaError(f"truncated or corrupt: first video frame cannot be decoded: {shown}")
    rotation = _norm_rotation(-(frame.rotation or 0))
    if rotation == 0 and "rotate" in vstream.metadata:  # legacy tag, already clockwise
        with contextlib.suppress(ValueError):
            rotation = _norm_rotation(float(vstream.metadata["rotate"]))
    fields.update(
        width=vcc.width or frame.width,
        height=vcc.height or frame.height,
        video_codec=vcc.codec.canonical_name,
        pix_fmt=vcc.pix_fmt or frame.format.name,
        rotation=rotation,
    )
    still = (
        fmt_name == "image2"
        or fmt_name.endswith("_pipe")
        or vstream.frames == 1
        # one packet in the whole stream: one picture, whatever the codec (a one-frame mkv or
        # MPEG-TS "video" has no span to cut a clip from, but is an image clip)
        or packets <= 1
    )
    if still and audios:  # a single picture over a soundtrack is audio with artwork
        return Probe(kind="audio", duration_s=duration, **fields)
    if still:
        return Probe(kind="image", frame_count=1, **{**fields, "bitrate": None})

    fps = _num(vstream.average_rate) or _num(vstream.guessed_rate) or _num(vstream.base_rate)
    vdur = duration
    if vstream.duration and vstream.time_base:
        vdur = float(vstream.duration * vstream.time_base)
    frame_count = int(vstream.frames) if vstream.frames and vstream.frames > 0 else None
    if frame_count is None and vdur and fps:
        frame_count = round(vdur * fps)
    fps = round(fps, 6) if fps else None
    return Probe(
        kind="video", duration_s=duration or vdur, fps=fps, frame_count=frame_count, **fields
    )
