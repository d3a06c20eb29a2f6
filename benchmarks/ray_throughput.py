"""Training throughput on Ray Train (1 worker) against the single-process path. Prints one JSON line.

Both run the project's real training (``python src/train/train.py``) on the same
params and tokenized data (run ``dvc repro tokenize`` first); only
``ray.use_ray`` differs. The ratio is what the Ray path costs per training step
(or gains); the fixed start-up of the Ray cluster is reported apart.

    python benchmarks/ray_throughput.py                 # CPU, 32-true
    python benchmarks/ray_throughput.py --device gpu    # 1 GPU worker, bf16-mixed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(params: dict, folder: Path) -> dict:
    """Train once with ``params`` into ``folder``; return metrics.json and the wall time."""
    folder.mkdir(parents=True)
    for key in ("model_dir", "checkpoint_dir", "metrics_file", "plots_dir"):
        params["paths"][key] = str(folder / Path(params["paths"][key]).name)
    if params["mlflow"]["tracking_uri"] != "file":
        params["mlflow"]["tracking_uri"] = f"sqlite:///{folder / 'mlflow.db'}"
    else:
        params["mlflow"]["tracking_uri"] = (folder / "mlruns").as_uri()
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    started = time.perf_counter()
    with open(folder / "train.log", "w") as log:
        done = subprocess.run(
            [sys.executable, str(ROOT / "src" / "train" / "train.py"), "--params", str(params_file)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"training failed ({folder.name}):\n" + (folder / "train.log").read_text()[-4000:])
    return {**json.loads((folder / "metrics.json").read_text()), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    parser.add_argument("--cpus", type=int, default=1, help="CPUs of the Ray worker")
    parser.add_argument("--batch-size", type=int, help="windows per step (default: params.yaml)")
    parser.add_argument(
        "--file-store",
        action="store_true",
        help="track into an MLflow file store (for machines with mlflow-skinny only)",
    )
    args = parser.parse_args()

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    gpu = args.device == "gpu"
    base["train"].update(
        {
            "max_steps": args.steps,
            "warmup_steps": min(base["train"]["warmup_steps"], args.steps - 1),
            "eval_every": args.steps,
            "checkpoint_every": args.steps,
            "accelerator": "gpu" if gpu else "cpu",
            "precision": "bf16-mixed" if gpu else "32-true",
            "resume": "never",
            **({"batch_size": args.batch_size} if args.batch_size else {}),
        }
    )
    if args.file_store:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        base["mlflow"]["tracking_uri"] = "file"
    base["ray"].update(
        {
            "num_workers": 1,
            "use_gpu": gpu,
            "resources_per_worker": {"CPU": args.cpus, **({"GPU": 1} if gpu else {})},
        }
    )
    with tempfile.TemporaryDirectory(dir=ROOT / "tmp") as scratch:
        single = run(json.loads(json.dumps(base)), Path(scratch) / "single")
        on_ray = run(
            {**json.loads(json.dumps(base)), "ray": {**base["ray"], "use_ray": True}}, Path(scratch) / "ray"
        )
    print(
        json.dumps(
            {
                "benchmark": "ray_throughput",
                "device": args.device,
                "precision": base["train"]["precision"],
                "steps": args.steps,
                "tokens_per_step": base["train"]["batch_size"] * base["train"]["max_length"],
                "single_tokens_per_s": round(single["tokens_per_s"]),
                "ray_tokens_per_s": round(on_ray["tokens_per_s"]),
                "ray_vs_single": round(on_ray["tokens_per_s"] / single["tokens_per_s"], 3),
                "single_wall_s": round(single["wall_s"], 1),
                "ray_wall_s": round(on_ray["wall_s"], 1),
                "ray_fixed_overhead_s": round(on_ray["wall_s"] - single["wall_s"], 1),
                "val_loss_single": single["val_loss"],
                "val_loss_ray": on_ray["val_loss"],
            }
        )
    )


if __name__ == "__main__":
    main()
