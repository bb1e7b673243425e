"""Audio shards: schema, writer, memory-mapped reader, demo corpus, splits and batching.

Shared by the driver (ingest, demo corpus) and the workers (streaming batches).
"""

from shards.schema import EMOTIONS, LANGUAGES, SAMPLE_RATE, Clip

__all__ = ["EMOTIONS", "LANGUAGES", "SAMPLE_RATE", "Clip"]
