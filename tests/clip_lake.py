"""A clips table as `transcode` leaves it, built directly from generated mp4s (no split or
transcode run): the tests of embed, fingerprint, dedup, tag and search start from it."""

from __future__ import annotations

import lance
import pyarrow as pa

from sila.schema import blob_field, owned
from tests.gen.dupset import DupClip, make_dupset


def make_clips(
    out_dir, originals: int = 4, variants: int = 2, seconds: float = 2.0
) -> list[DupClip]:
    return make_dupset(str(out_dir), originals=originals, variants=variants, seconds=seconds)


def clips_table(lake, clips: list[DupClip], rows_per_fragment: int = 6, bad: bool = True) -> None:
    """Write `clips` (plus, with `bad`, one clip whose video bytes are garbage) as `clips`."""
    ids, videos, sizes, groups = [], [], [], []
    for i, c in enumerate(clips):
        with open(c.path, "rb") as fh:
            data = fh.read()
        ids.append(f"src{c.group}/{i}")
        videos.append(data)
        sizes.append(len(data))
        groups.append(c.group)
    if bad:
        ids.append("bad/0-1")
        videos.append(b"\x00\x00\x00\x18ftypmp42 this is not a video")
        sizes.append(40)
        groups.append(-1)
    n = len(ids)
    base = [pa.field("id", pa.string()), pa.field("source_id", pa.string()),
            pa.field("start_s", pa.float64()), pa.field("end_s", pa.float64()),
            pa.field("truth_group", pa.int32()),
            pa.field("clip_kind", pa.string())]  # fmt: skip
    tc = owned(
        [blob_field("video"), pa.field("video_bytes", pa.int64()),
         pa.field("transcode_error", pa.string())],
        "transcode", "1",
    )  # fmt: skip
    schema = pa.schema(base + tc)
    tbl = pa.table(
        [pa.array(ids), pa.array([i.split("/")[0] for i in ids]), pa.array([0.0] * n),
         pa.array([2.0] * n), pa.array(groups, pa.int32()), pa.array(["video"] * n),
         pa.array(videos, pa.large_binary()),
         pa.array(sizes, pa.int64()), pa.nulls(n, pa.string())],
        schema=schema,
    )  # fmt: skip
    lance.write_dataset(tbl, lake.table_uri("clips"), max_rows_per_file=rows_per_fragment)
