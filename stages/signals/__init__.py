"""Signal stages: per-clip video and audio measurements (scores only; decisions live elsewhere)."""
