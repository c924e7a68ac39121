"""Data-parallel fitting and training (benchmarks/distributed.py) with the
gloo backend on the CPU, 2 processes started by torchrun: the sharded IK
solutions must equal a single process's, and the DDP gradients (through IK's
implicit backward, FK and skinning) must equal the full batch's gradients."""

import os
import signal
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
    result = None
    # The run takes about 20 s. Once in a while (seen once under torch 2.13 on
    # the 2-core CI machine) rank 0 exits and rank 1 waits on a futex for good:
    # a hang in the launcher or gloo, not a wrong result. A hung run is killed
    # with its workers and run once more; a run that ends is judged as it is.
    for attempt in range(2):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                   cwd=ROOT, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            print(f"attempt {attempt + 1}: torchrun hung for 240 s; killed it and its workers")
            continue
        result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        break
    assert result is not None, "torchrun hung twice (240 s each)"
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "sharded against one process: max |difference| 0" in output, output[-4000:]
    assert "DDP gradients against the full batch's in one process: max relative difference" in output
    assert "CHECK FAILED" not in output
