"""Two CPU processes (torchrun, Gloo) train one tiny epoch with DistributedDataParallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_two_process_epoch(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "brainseg_core.training", "segmenter", str(tiny_dataset), "--out", str(out),
        "--width", "4", "--depth", "2", "--epochs", "1", "--batch-size", "4", "--image-size", "64",
        "--val-patients", "0.25", "--device", "cpu", "--quiet", "--name", "ddp-test",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    card = json.loads((out / "ddp-test.json").read_text())
    t = card["training"]
    assert t["processes"] == 2 and t["epochs_run"] == 1
    # 24 training slices, 12 per rank, batch 4: 3 steps per epoch on each rank
    assert t["steps"] == 3
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 1  # only rank 0 writes
    assert proc.stdout.count("epoch 1:") == 1
