"""The workflow guide's path of the download script: runs :mod:`scripts.download_datasets`.

``python src/utils/download_datasets.py --cache-dir data/raw_cache`` (``--help`` for the rest).
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("scripts.download_datasets", run_name="__main__")
