"""Training throughput on Ray Train against the single-process path. Prints one JSON line.

Every run is the project's real training (``python src/train/train.py``) on the
same params, tokenized data (run ``dvc repro`` first) and global batch; only
where it runs differs. On the CPU: one process, 2 workers on the local cluster
the stage starts, and 2 workers on a simulated 2-node cluster (Ray's own
``ray.cluster_utils.Cluster``, one CPU per node, one worker on each). On a GPU:
one process against 1 Ray worker. The ratios are what the Ray path costs per
training step (or gains); each run's fixed seconds (start-up, validation,
outputs: its wall time less its training time) are reported apart.

    python benchmarks/ray_throughput.py                 # CPU, 32-true
    python benchmarks/ray_throughput.py --device gpu    # 1 GPU worker, bf16-mixed
    python benchmarks/ray_throughput.py --device gpu --strategy fsdp   # the same worker under FSDP
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
from bench_support import add_params_argument  # beside this script

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


def summary(result: dict) -> dict:
    """Tokens/s while training, and the fixed seconds around it (wall time less training time)."""
    training_s = result["tokens_seen"] / result["tokens_per_s"]
    return {
        "tokens_per_s": round(result["tokens_per_s"]),
        "wall_s": round(result["wall_s"], 1),
        "fixed_s": round(result["wall_s"] - training_s, 1),
        "val_loss": result["val_loss"],
    }


def on_two_nodes(params: dict, folder: Path) -> dict:
    """Train on a cluster of two one-CPU nodes started here, as a cluster that already runs."""
    from ray.cluster_utils import Cluster

    started = time.perf_counter()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
        shutdown_at_exit=False,
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        cluster_start_s = time.perf_counter() - started
        params["ray"]["address"] = cluster.address
        return {**run(params, folder), "cluster_start_s": cluster_start_s}
    finally:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    parser.add_argument("--cpus", type=int, default=1, help="CPUs of each Ray worker")
    parser.add_argument(
        "--strategy", choices=["ddp", "fsdp", "deepspeed"], default="ddp", help="ray.strategy (fsdp: GPUs)"
    )
    parser.add_argument("--batch-size", type=int, help="windows per step, all workers (default: params.yaml)")
    parser.add_argument(
        "--file-store",
        action="store_true",
        help="track into an MLflow file store (for machines with mlflow-skinny only)",
    )
    add_params_argument(parser)
    args = parser.parse_args()

    base = yaml.safe_load(args.params.read_text())
    gpu = args.device == "gpu"
    batch = args.batch_size or base["train"]["batch_size"]
    base["train"].update(
        {
            "max_steps": args.steps,
            "warmup_steps": min(base["train"]["warmup_steps"], args.steps - 1),
            "eval_every": args.steps,
            "checkpoint_every": args.steps,
            "accelerator": "gpu" if gpu else "cpu",
            "precision": "bf16-mixed" if gpu else "32-true",
            "resume": "never",
            "batch_size": batch,
        }
    )
    if args.file_store:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        base["mlflow"]["tracking_uri"] = "file"
    workers = 1 if gpu else 2
    if batch % workers:
        sys.exit(f"--batch-size {batch} does not split over {workers} workers")
    on_ray = json.loads(json.dumps(base))
    on_ray["train"]["batch_size"] = batch // workers  # the same global batch
    on_ray["ray"].update(
        {
            "use_ray": True,
            "num_workers": workers,
            "use_gpu": gpu,
            "strategy": args.strategy,
            "resources_per_worker": {"CPU": args.cpus, **({"GPU": 1} if gpu else {})},
        }
    )
    results = {}
    with tempfile.TemporaryDirectory(dir=ROOT / "tmp") as scratch:
        results["single"] = run(json.loads(json.dumps(base)), Path(scratch) / "single")
        name = f"ray_{workers}_local"
        results[name] = run(json.loads(json.dumps(on_ray)), Path(scratch) / name)
        if not gpu:
            results["ray_2_nodes"] = on_two_nodes(json.loads(json.dumps(on_ray)), Path(scratch) / "two_nodes")
    single = results["single"]["tokens_per_s"]
    report = {
        "benchmark": "ray_throughput",
        "device": args.device,
        "strategy": args.strategy,
        "precision": base["train"]["precision"],
        "steps": args.steps,
        "global_batch_tokens": batch * base["train"]["max_length"],
        "runs": {name: summary(result) for name, result in results.items()},
        "ratios": {
            f"{name}_vs_single": round(result["tokens_per_s"] / single, 3)
            for name, result in results.items()
            if name != "single"
        },
    }
    if "ray_2_nodes" in results:
        report["two_node_cluster_start_s"] = round(results["ray_2_nodes"]["cluster_start_s"], 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
