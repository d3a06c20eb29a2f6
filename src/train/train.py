"""The workflow guide's path of the training script: runs :mod:`scripts.train`.

``python src/train/train.py [--params FILE]`` (``--help`` for the rest).
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("scripts.train", run_name="__main__")
