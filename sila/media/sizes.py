"""The one resize rule: how every reader and encoder of SILA picks an output size."""

from __future__ import annotations


def output_size(
    width: int,
    height: int,
    *,
    short_side: int = 0,
    max_side: int = 0,
    even: bool = False,
    upscale: bool = False,
) -> tuple[int, int]:
    """The one resize rule: (w, h) scaled so the short side is `short_side`, else so the long
    side is `max_side` (0: keep the size), keeping the aspect; never up unless `upscale`.
    `even`: both sides even (video encoders want it), at least 2; else at least 1 (a 1-pixel
    wide picture stays 1 pixel wide)."""
    w, h = max(1, int(width)), max(1, int(height))
    scale = 1.0
    if short_side > 0:
        scale = short_side / min(w, h)
    elif max_side > 0:
        scale = max_side / max(w, h)
    if not upscale:
        scale = min(1.0, scale)
    if not even:
        return max(1, round(w * scale)), max(1, round(h * scale))
    ow, oh = max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)
    if max_side > 0 and not short_side:  # rounding up to even may not pass the bound
        ow, oh = min(ow, max(2, max_side // 2 * 2)), min(oh, max(2, max_side // 2 * 2))
    return ow, oh


def display_size(
    width: int | None, height: int | None, rotation: int | None
) -> tuple[int, int] | None:
    """(width, height) as displayed, after a rotation of 0/90/180/270 degrees; None when the
    stored size is unknown."""
    if width is None or height is None:
        return None
    return (height, width) if rotation in (90, 270) else (width, height)
