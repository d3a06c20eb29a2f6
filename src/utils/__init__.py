"""Leaf helpers that know nothing of the pipeline: files, logging, the Hub probe, typed config.

``setup_logging`` is exported here because the workflow guide names it ``utils.setup_logging``.
(``download_datasets.py`` beside them is the workflow guide's path of ``scripts/download_datasets.py``.)
"""

from src.utils.logging_setup import setup_logging

__all__ = ["setup_logging"]
