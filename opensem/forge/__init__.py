"""Data Forge: raw documents -> clean, decontaminated ShareGPT ("messages") training data.

ingest.py (read + normalise) -> chunk.py (token chunks with headings) -> teachers.py /
extractive.py (write pairs) -> quality.py (filter, dedup, decontaminate) -> stage.py (split,
write, track). `run` is the stage entry point.
"""

from opensem.forge.stage import run

__all__ = ["run"]
