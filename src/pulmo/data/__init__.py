"""Data: records, source adapters, splits, audio I/O and datasets."""
