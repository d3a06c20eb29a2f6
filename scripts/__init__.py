"""The workflow guide's command-line scripts: top layer, beside ``stages/`` (nothing imports them).

``python src/utils/download_datasets.py`` and ``python src/train/train.py``, the paths the workflow
guide names, are shims that run these; ``make ui`` runs :mod:`scripts.mlflow_ui`.
"""
