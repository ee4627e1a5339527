"""polydiff plugin for sound and music (see :mod:`polydiff_audio.modality`)."""

from .modality import AudioModality

__all__ = ["AudioModality"]
