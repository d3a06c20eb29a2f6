"""Shared helpers: logging setup, atomic file writes, the command-line wrapper."""

from src.utils.logging_setup import setup_logging

__all__ = ["setup_logging"]
