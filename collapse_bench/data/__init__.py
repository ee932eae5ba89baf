"""Data resolution: the data dir layout, offline builtin sources, and ``data pull``."""

from .datadir import dataset_file, resolve_data_dir

__all__ = ["dataset_file", "resolve_data_dir"]
