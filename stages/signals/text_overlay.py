"""Text overlay area from an OCR text detector, and rotation where text shows it.

The default detector is RapidOCR's PP-OCR text detection model, which ships inside the
`rapidocr-onnxruntime` wheel (`pip install 'sila[ocr]'`): nothing is downloaded. Any object with
`boxes(bgr) -> list[4x2 points]` can stand in (`ocr = "module:factory"` on `video_signals`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from sila.errors import SilaError

MIN_LINE_ASPECT = 2.5


class TextDetector(Protocol):
    name: str

    def boxes(self, bgr: np.ndarray) -> list[np.ndarray]: ...


class RapidOcrDetector:
    """PP-OCRv4 text detection (det only: area and orientation need no recognition)."""

    name = "rapidocr-onnxruntime/ch_PP-OCRv4_det"

    def __init__(self, max_side: int = 640) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as e:
            raise SilaError(
                "video_signals: the OCR needs rapidocr-onnxruntime (its models ship in the wheel): "
                "pip install 'sila[ocr]', or set stages.video_signals.ocr = \"none\""
            ) from e
        # its default upscales every image to a 736 px *short* side (4x our sampled frames,
        # ~20x the time); bounding the long side instead keeps the frames near their size
        self.engine = RapidOCR(det_limit_side_len=int(max_side), det_limit_type="max")

    def boxes(self, bgr: np.ndarray) -> list[np.ndarray]:
        result, _ = self.engine(bgr, use_det=True, use_cls=False, use_rec=False)
        return [np.asarray(b, np.float32) for b in result or []]


@dataclass
class TextMeasures:
    area: float  # max over sampled frames of the fraction of the frame inside text boxes
    vertical: float  # fraction of text area in boxes standing upright (text turned 90 degrees)


def measure_text(frames: list[np.ndarray], det: TextDetector) -> TextMeasures:
    best_area, vertical_area, total_area = 0.0, 0.0, 0.0
    for bgr in frames:
        h, w = bgr.shape[:2]
        mask = np.zeros((h, w), np.uint8)
        for box in det.boxes(bgr):
            bw = float(np.linalg.norm(box[1] - box[0]))
            bh = float(np.linalg.norm(box[3] - box[0]))
            if max(bw, bh) < MIN_LINE_ASPECT * min(bw, bh):
                continue  # a line of text is long and thin; blobs of texture are not
            cv2.fillPoly(mask, [box.astype(np.int32)], 1)
            area = bw * bh
            total_area += area
            if bh > 2.0 * bw:  # a line of text reads along its long side
                vertical_area += area
        best_area = max(best_area, float(mask.mean()))
    return TextMeasures(best_area, vertical_area / total_area if total_area else 0.0)
