"""Data-parallel fitting and training (benchmarks/distributed.py) with the
gloo backend on the CPU, 2 processes started by torchrun: the sharded IK
solutions must equal a single process's, and the DDP gradients (through IK's
implicit backward, FK and skinning) must equal the full batch's gradients."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_sharded_fitting_and_ddp_training_match_one_process():
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               os.path.join(ROOT, "benchmarks", "distributed.py"), "--backend", "gloo", "--device", "cpu",
               "--check", "--batch", "255", "--train-batch", "64", "--steps", "1", "--dtype", "float64"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "sharded against one process: max |difference| 0" in output, output[-4000:]
    assert "DDP gradients against the full batch's in one process: max relative difference" in output
    assert "CHECK FAILED" not in output
