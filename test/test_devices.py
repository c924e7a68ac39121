"""Every op (the conformance table's rows, backward ops included) on the GPU
as torch.distributed users run them: on a non-default stream, captured in a
CUDA graph on a side stream, and (with two GPUs) on the device of its
tensors whatever the current device is. Each result must equal the plain
call's on the default stream of the tensors' device."""

import pytest
import torch

from conftest import HAS_CUDA
from test_conformance import IDS, TABLE, assert_same, on, skin_indices_on_device

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build")]
TWO_GPUS = HAS_CUDA and torch.cuda.device_count() >= 2
# Backward kernels accumulate with atomics: the same up to summation order.
TOLERANCE = 1e-10


def arguments(row, device, seed=0):
    raw = row.make(5, torch.Generator().manual_seed(seed))
    return skin_indices_on_device(row, device, on(device, raw))


def outputs(result):
    return list(result) if isinstance(result, (tuple, list)) else [result]


def on_devices(result):
    return {str(t.device) for t in outputs(result) if isinstance(t, torch.Tensor)}


@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_a_side_stream_gives_the_default_streams_result(row):
    args = arguments(row, "cuda")
    expected = row.op(*args)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = row.op(*args)
        # Work queued on the side stream, not the default one: the result is
        # only safe to read on the default stream after waiting for it.
    torch.cuda.current_stream().wait_stream(stream)
    for t in outputs(got):
        t.record_stream(torch.cuda.current_stream())
    assert_same(outputs(got), outputs(expected), TOLERANCE)


@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_capture_in_a_cuda_graph_on_a_side_stream(row):
    """torch.cuda.graph captures on a side stream; replaying it recomputes
    from the static inputs, here after they were overwritten in place."""
    args = arguments(row, "cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the capture, on the side stream
        row.op(*args)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        captured = row.op(*args)
    fresh = arguments(row, "cuda", seed=1)
    for static, new in zip(args, fresh):
        if isinstance(static, torch.Tensor) and static.is_floating_point() and static.shape == new.shape:
            static.copy_(new)
    graph.replay()
    torch.cuda.synchronize()
    assert_same(outputs(captured), outputs(row.op(*args)), TOLERANCE)


@pytest.mark.skipif(not TWO_GPUS, reason="needs two GPUs")
@pytest.mark.parametrize("row", TABLE, ids=IDS)
@pytest.mark.parametrize("data,current", [(0, 1), (1, 0)], ids=["data_on_0", "data_on_1"])
def test_runs_on_the_tensors_device_whatever_the_current_device(row, data, current):
    device = torch.device("cuda", data)
    args = arguments(row, device)
    with torch.cuda.device(data):
        expected = row.op(*args)
    with torch.cuda.device(current):
        got = row.op(*args)
        torch.cuda.synchronize(device)
    assert on_devices(got) == {str(device)}
    assert_same(outputs(got), outputs(expected), TOLERANCE)
