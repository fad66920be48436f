"""Data: TFDS sources (or embedded real data offline) read through Grain."""
