"""Media for SILA: probing, frame reading, resizing, audio decoding, one error normalisation.

* `probe` (`sila.media.probing`): what a file holds, or a `MediaError` saying why it is not
  usable media; `read_streams` (`sila.media.streams`): the streams the stages decode.
* `FrameReader` (`sila.media.frames`): the one frame reader (by times, frame rate or count;
  sized by `output_size` (`sila.media.sizes`), the one resize rule; rgb24 / bgr24 / gray; upright).
* `audio_blocks` (`sila.media.audio`): mono float32 blocks at a sample rate.
* `run_ffmpeg` (`sila.media.ffmpeg`): the ffmpeg binary for encoding and filters.
* `user_message` (`sila.media.errors`): a row's error naming the user's own path.
"""

from __future__ import annotations

from sila.errors import MediaError
from sila.media.audio import audio_blocks
from sila.media.errors import user_message
from sila.media.ffmpeg import ffmpeg_exe, run_ffmpeg, stderr_tail
from sila.media.frames import FrameReader, read_frames, sample_frames, sample_times
from sila.media.probing import Probe, display_path, probe
from sila.media.sizes import output_size
from sila.media.stills import encode_jpeg, extract_frame_jpeg, frame_at, jpeg_quality
from sila.media.streams import Streams, read_streams

__all__ = [
    "FrameReader",
    "MediaError",
    "Probe",
    "Streams",
    "audio_blocks",
    "display_path",
    "encode_jpeg",
    "extract_frame_jpeg",
    "ffmpeg_exe",
    "frame_at",
    "jpeg_quality",
    "output_size",
    "probe",
    "read_frames",
    "read_streams",
    "run_ffmpeg",
    "sample_frames",
    "sample_times",
    "stderr_tail",
    "user_message",
]
