"""A reproducible, DVC-tracked language-model training pipeline.

Importable as ``src`` from the repository root, as the project's workflow guide
documents (``from src.data.data_manager import LightningDataModule``).
"""
