"""Data-parallel LoRA training across processes (GPUs) with torchrun; the Trainer picks up the process group.

``duomem distill train --nproc N`` re-launches this module under ``torch.distributed.run``; each rank trains on
its shard, rank 0 writes the adapter and ``training.json``. The single-process path stays the default.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from duomem import settings
from duomem.distill.train import LoraConfig, train_lora
from duomem.errors import ConfigError


def launch_distributed(model: str, data: Path, out: Path, config: LoraConfig, device: str, nproc: int) -> None:
    """Run ``nproc`` training processes on this host (one per GPU with ``device`` cuda)."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.device_count() < nproc:
            raise ConfigError(f"--nproc {nproc} asks for more processes than the {torch.cuda.device_count()} "
                              "GPUs torch sees")
    env = settings.environment()
    env.setdefault("NCCL_NVLS_ENABLE", "0")  # no NVLink multicast (shared hosts)
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "duomem.distill.launch", "--model", model, "--data", str(data), "--out", str(out),
           "--device", device, "--config", config.model_dump_json()]
    done = subprocess.run(cmd, env=env)
    if done.returncode != 0:
        raise ConfigError(f"distributed training failed (exit {done.returncode}); see the log above")


def _main() -> None:
    parser = argparse.ArgumentParser(description="one rank of duomem's distributed LoRA training")
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    rank, _ = settings.distributed_rank()
    device = f"cuda:{rank}" if args.device.startswith("cuda") else "cpu"
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(rank)
    config = LoraConfig.model_validate(json.loads(args.config))
    train_lora(args.model, args.data, args.out, config, device=device, threads=1 if device == "cpu" else None)


if __name__ == "__main__":
    _main()
