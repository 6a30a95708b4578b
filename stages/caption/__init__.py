"""`caption`: structured JSON captions from a VLM behind an OpenAI-compatible endpoint."""

from sila.stages.caption.stage import Caption

__all__ = ["Caption"]
