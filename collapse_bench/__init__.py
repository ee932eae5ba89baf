"""collapse-bench: representation-collapse benchmark for post-trained language models.

Pipeline: models (resolve a checkpoint) -> data (resolve files in the data dir) -> tasks (typed YAML)
-> probe (one streaming forward pass) -> metrics (mergeable accumulators) -> results (JSON).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("collapse-bench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
