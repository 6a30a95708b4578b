"""Frames out of a video: the one reader every stage uses, and the one resize rule.

`FrameReader` decodes in-process with PyAV and converts only the frames it selects (by
timestamps, on a uniform frame-rate grid, or a count spread over the clip), in one swscale pass
to the output size and pixel format (rgb24, bgr24 or gray), from the frame's own colour space
and range; rotation and the sample aspect ratio are applied, so the picture is upright at its
display shape. Frames are streamed: memory is one decoded frame plus what the caller keeps,
whatever the video's length. Every failure is a `MediaError` naming the user's path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import av
import numpy as np

from sila.errors import MediaError
from sila.media.errors import DECODE_ERRORS, decode_failure, open_failure, reason
from sila.media.probing import display_path
from sila.media.sizes import output_size

log = logging.getLogger(__name__)

SEEK_GAP_S = 4.0  # a target this far past the decoder's position is reached by seeking
FORMATS = ("rgb24", "bgr24", "gray")


def sample_times(duration: float, count: int, fps: float = 0.0, max_count: int = 64) -> list[float]:
    """Timestamps (s) to sample: `fps` frames per second when set, else `count` frames, each at
    the middle of its equal share of the clip (never the very first/last frame, often a cut)."""
    if duration <= 0:
        return [0.0]
    n = min(max_count, max(1, round(duration * fps))) if fps > 0 else max(1, count)
    return [(i + 0.5) * duration / n for i in range(n)]


class FrameReader:
    """Frames of one video stream of `path`, selected, scaled and converted.

    Selection (one of): ``times`` (a list, or a function of the clip's duration returning one:
    the first frame at or after each time, in seconds from the first frame; a frame may serve several times, and past the end the last frame stands in
    unless ``pad=False``), ``fps`` (a uniform grid, as ffmpeg's ``fps`` filter: slot n shows
    the last frame whose time rounds to at most n / fps, so variable-rate input comes out at a
    constant rate), ``count`` (that many times spread over the clip by `sample_times`; ``count_fps``: that many
    per second instead, at most ``max_frames``), or every frame.
    ``max_frames`` caps what is yielded. Size (on the upright display shape): ``size`` exactly
    (w, h), else `output_size` with ``short_side`` / ``max_side`` / ``even`` / ``upscale``.
    ``pre``: ffmpeg filters run in-process on each selected frame at full size before scaling
    (e.g. ``blockdetect``); each frame's filter metadata is appended to ``meta``.

    Iterate for arrays (HxWx3 uint8, HxW for gray); `timed` gives (seconds, array); `chunks`
    gives (n, H, W, C) blocks. Afterwards: ``frames`` (yielded), ``decoded``, ``warning`` (set
    when decoding broke off after some frames: what was decoded is kept), ``display_size``,
    ``duration_s``, ``rate``, ``size_out``.
    """

    def __init__(
        self,
        path: str,
        *,
        fps: float = 0.0,
        times: Sequence[float] | Callable[[float], Sequence[float]] | None = None,
        count: int = 0,
        count_fps: float = 0.0,
        max_frames: int = 0,
        size: tuple[int, int] | None = None,
        short_side: int = 0,
        max_side: int = 0,
        even: bool = False,
        upscale: bool = False,
        fmt: str = "rgb24",
        interpolation: str = "BICUBIC",
        stream: int | None = None,
        pre: str | None = None,
        pad: bool = True,
        label: str | None = None,
        threads: int = 0,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
        self.path, self.fps, self.max_frames = path, fps, max_frames
        self.count, self.count_fps = count, count_fps
        self.times = times
        self.size, self.short_side, self.max_side = size, short_side, max_side
        self.even, self.upscale, self.fmt, self.interpolation = even, upscale, fmt, interpolation
        self.stream, self.pre, self.pad, self.threads = stream, pre, pad, threads
        self.shown = label or display_path(path)  # what messages name: the user's path
        self.frames = self.decoded = 0
        self.warning: str | None = None
        self.meta: list[dict[str, str]] = []
        self.display_size: tuple[int, int] | None = None
        self.size_out: tuple[int, int] | None = None
        self.duration_s: float | None = None
        self.rate: float | None = None
        self._rotation = 0
        self._graph: Any = None
        self._seeked = False

    # -- public iteration ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[np.ndarray]:
        for _, image in self.timed():
            yield image

    def timed(self) -> Iterator[tuple[float, np.ndarray]]:
        """(seconds from the first frame, image) of every selected frame."""
        try:
            container = av.open("file:" + os.path.abspath(self.path), metadata_errors="replace")
        except DECODE_ERRORS as e:
            raise open_failure(e, self.path, self.shown) from None
        with container:
            vs = self._video_stream(container)
            if self.times is not None or self.count or self.count_fps:
                yield from self._limit(self._by_times(container, vs))
            elif self.fps > 0:
                yield from self._limit(self._by_rate(container, vs))
            else:
                every = ((t, self._convert(f)) for t, f in self._decoded(container, vs, None))
                yield from self._limit(every)
        if self.decoded == 0:
            raise MediaError(f"ffmpeg could not decode the video: no decodable frame: {self.shown}")

    def chunks(self, n: int = 200) -> Iterator[np.ndarray]:
        """Blocks of up to `n` frames (n, H, W, C) in two recycled buffers: a block is valid
        until the next is asked for (copy what you keep); allocation does not grow with length."""
        bufs: list[np.ndarray] = []
        fill, turn = 0, 0
        for image in self:
            if not bufs:
                bufs = [np.empty((n, *image.shape), np.uint8) for _ in range(2)]
            bufs[turn][fill] = image
            fill += 1
            if fill == n:
                yield bufs[turn]
                fill, turn = 0, 1 - turn
        if fill:
            yield bufs[turn][:fill]

    # -- decoding ------------------------------------------------------------------------------
    def _video_stream(self, container: Any) -> Any:
        if self.stream is not None:
            vs = container.streams[self.stream]
        else:
            attached = av.stream.Disposition.attached_pic
            videos = [s for s in container.streams.video if not (s.disposition & attached)]
            if not videos:
                raise MediaError(f"no video stream: {self.shown}")
            vs = videos[0]
        vs.thread_type = "AUTO"
        if self.threads:
            vs.codec_context.thread_count = self.threads
        tb = vs.time_base
        if vs.duration and tb:
            self.duration_s = float(vs.duration * tb)
        elif container.duration and container.duration > 0:
            self.duration_s = container.duration / 1e6
        rate = vs.average_rate or vs.guessed_rate
        self.rate = float(rate) if rate else None
        sar = vs.sample_aspect_ratio or vs.codec_context.sample_aspect_ratio
        self._sar = float(sar) if sar and float(sar) > 0 else 1.0
        self._rotate_tag = vs.metadata.get("rotate")
        return vs

    def _decoded(self, container: Any, vs: Any, seek: float | None) -> Iterator[tuple[float, Any]]:
        """(absolute seconds, frame) of each decoded frame, from `seek` (a keyframe at or before
        it) or the current position. Decoding that breaks after frames came ends the stream
        with a `warning`; before any frame it is a MediaError."""
        if seek is not None and vs.time_base:
            try:
                container.seek(int(seek / vs.time_base), stream=vs, backward=True)
            except DECODE_ERRORS as e:
                log.info("%s: seek to %.3f s failed (%s); decoding on", self.shown, seek, e)
        self._seeked = self._seeked or seek is not None
        frames = container.decode(vs)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                self._check_complete(vs)
                return
            except DECODE_ERRORS as e:
                if self.decoded == 0:
                    raise decode_failure(e, self.shown) from None
                self.warning = f"decoded {self.decoded} frames; ffmpeg reported errors: {reason(e)}"
                log.warning("%s: %s", self.shown, self.warning)
                return
            self.decoded += 1
            yield _seconds(frame, self.decoded, self.rate), frame

    def _check_complete(self, vs: Any) -> None:
        """A stream that ends well before the frames its index states lost its end (a cut-off
        download): what decoded is kept, and `warning` says so."""
        stated = int(vs.frames or 0)
        if self._seeked or not stated or self.decoded >= stated - 1:
            return
        self.warning = (
            f"decoded {self.decoded} of the {stated} frames the file's index states: "
            "the file ends early (truncated?)"
        )
        log.warning("%s: %s", self.shown, self.warning)

    def _limit(
        self, items: Iterator[tuple[float, np.ndarray]]
    ) -> Iterator[tuple[float, np.ndarray]]:
        for item in items:
            self.frames += 1
            yield item
            if self.max_frames and self.frames >= self.max_frames:
                return

    def _by_times(self, container: Any, vs: Any) -> Iterator[tuple[float, np.ndarray]]:
        if callable(self.times):  # a function of the duration, known now the file is open
            targets = sorted(self.times(self.duration_s or 0.0))
        elif self.times is not None:
            targets = sorted(self.times)
        else:
            max_count = self.max_frames or 64
            targets = sample_times(self.duration_s or 0.0, self.count, self.count_fps, max_count)
        start = float(vs.start_time * vs.time_base) if vs.start_time and vs.time_base else 0.0
        t0: float | None = None
        pos, i, last, frames, sought = start, 0, None, None, None
        while i < len(targets):
            target = (start if t0 is None else t0) + targets[i]
            far = target - pos > SEEK_GAP_S and target != sought  # one seek per target
            if frames is None or far:
                seek = sought = target if far else None
                if seek is not None and t0 is None:  # times count from the stream's start
                    t0 = start
                if frames is not None:
                    frames.close()
                frames = self._decoded(container, vs, seek)
            item = next(frames, None)
            if item is None:
                break
            t, frame = item
            t0 = t if t0 is None else t0
            pos, last, image = t, frame, None
            while i < len(targets) and t - t0 >= targets[i] - 1e-6:
                image = self._convert(frame) if image is None else image
                yield t - t0, image
                i += 1
        if i < len(targets) and last is not None and self.pad:  # duration overstated
            image = self._convert(last)
            for _ in targets[i:]:
                yield pos - (t0 or 0.0), image

    def _by_rate(self, container: Any, vs: Any) -> Iterator[tuple[float, np.ndarray]]:
        t0: float | None = None
        slot, held, held_t, image = 0, None, 0.0, None
        duration = 0.0
        for t, frame in self._decoded(container, vs, None):
            t0 = t if t0 is None else t0
            s = round((t - t0) * self.fps)
            while held is not None and slot < s:  # the held frame fills every slot it owns
                image = self._convert(held) if image is None else image
                yield slot / self.fps, image
                slot += 1
            held, held_t, image = frame, t, None
            duration = _frame_duration(frame, self.rate)
        if held is None:
            return
        end = round((held_t + duration - (t0 or 0.0)) * self.fps)
        image = self._convert(held) if slot < end else None
        for s in range(slot, end):  # ffmpeg's count: the grid up to the end of the last frame
            yield s / self.fps, image

    # -- conversion ----------------------------------------------------------------------------
    def _convert(self, frame: Any) -> np.ndarray:
        if self.size_out is None:
            self._plan(frame)
        if self.pre:
            frame = self._filter(frame)
        w, h = self.size_out  # type: ignore[misc]
        if self._rotation in (90, 270):
            w, h = h, w
        image = frame.to_ndarray(
            format=self.fmt,
            width=w,
            height=h,
            interpolation=self.interpolation,
            src_color_range=frame.color_range or None,
            threads=self.threads,  # 0: swscale's own choice
        )
        if self._rotation:
            image = np.ascontiguousarray(np.rot90(image, k=-self._rotation // 90))
        return image

    def _plan(self, frame: Any) -> None:
        """Rotation and sizes, from the first frame converted."""
        degrees = -(frame.rotation or 0)
        if degrees == 0 and self._rotate_tag:
            try:
                degrees = float(self._rotate_tag)  # the legacy tag is already clockwise
            except ValueError:
                degrees = 0
        self._rotation = int(round(degrees / 90.0)) % 4 * 90
        w, h = max(1, round(frame.width * self._sar)), frame.height
        if self._rotation in (90, 270):
            w, h = h, w
        self.display_size = (w, h)
        if self.size is not None:
            self.size_out = self.size
        else:
            self.size_out = output_size(
                w,
                h,
                short_side=self.short_side,
                max_side=self.max_side,
                even=self.even,
                upscale=self.upscale,
            )

    def _filter(self, frame: Any) -> Any:
        if self._graph is None:
            graph = av.filter.Graph()
            node = graph.add_buffer(
                width=frame.width,
                height=frame.height,
                format=frame.format.name,
                time_base=frame.time_base,
            )
            for part in self.pre.split(","):  # type: ignore[union-attr]
                name, _, args = part.partition("=")
                nxt = graph.add(name.strip(), args or None)
                node.link_to(nxt)
                node = nxt
            node.link_to(graph.add("buffersink"))
            graph.configure()
            self._graph = graph
        self._graph.vpush(frame)
        out = self._graph.vpull()
        self.meta.append(dict(out.metadata))
        return out


def _seconds(frame: Any, index: int, rate: float | None) -> float:
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base)
    return frame.time if frame.time is not None else (index - 1) / (rate or 25.0)


def _frame_duration(frame: Any, rate: float | None) -> float:
    if frame.duration and frame.time_base:
        return float(frame.duration * frame.time_base)
    return 1.0 / (rate or 25.0)


def read_frames(path: str, **options: Any) -> list[np.ndarray]:
    """Every selected frame as a list (`FrameReader` options): for a few sampled frames only."""
    return list(FrameReader(path, **options))


def sample_frames(
    path: str,
    count: int = 8,
    fps: float = 0.0,
    short_side: int = 256,
    fmt: str = "rgb24",
    max_count: int = 64,
    size: tuple[int, int] | None = None,
) -> list[np.ndarray]:
    """Frames at `sample_times` of the clip (`count`, or `fps` capped at `max_count`), scaled so
    the short side is `short_side` (bicubic, as CLIP's own transform; up too), or to exactly
    `size` (w, h) by area averaging. Memory: the sampled frames only."""
    return list(
        FrameReader(
            path,
            count=count,
            count_fps=fps,
            max_frames=max_count,
            fmt=fmt,
            size=size,
            short_side=short_side,
            upscale=True,
            interpolation="AREA" if size is not None else "BICUBIC",
        )
    )
