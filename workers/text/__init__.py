"""The text baseline: transcripts through a text encoder and the same classification head shape."""
