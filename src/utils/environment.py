"""Keep every file the pipeline writes inside the project, and keep it quiet.

Libraries read these variables when first imported, so entry points call
:func:`configure_environment` (through :func:`src.cli.start_process`) before
importing ``datasets`` or ``transformers``. Values the user already set win.
"""

from __future__ import annotations

import os
from pathlib import Path

from src.paths import PROJECT_ROOT


def configure_environment(model_cache: Path, root: Path = PROJECT_ROOT) -> None:
    """Point Hugging Face's caches at ``model_cache``, compiler caches at ``<root>/tmp``, telemetry off."""
    defaults = {
        "HF_HOME": str(model_cache),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "TORCHINDUCTOR_CACHE_DIR": str(root / "tmp" / "torchinductor"),
        # MKL's matrix products may round differently with memory alignment; STRICT makes
        # them bitwise reproducible (no measurable cost here), so a resumed run matches.
        "MKL_CBWR": "AUTO,STRICT",
        "MKL_DYNAMIC": "FALSE",  # always the requested thread count, so reductions split the same way
        # An unreachable tracking server should fail in seconds, not after minutes of retries.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
