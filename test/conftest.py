import os
import zlib
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import momentum_ops  # noqa: E402,F401  (fails the run with the import check's message)

HAS_CUDA = torch.cuda.is_available() and momentum_ops.BUILD_INFO["cuda_version"] is not None

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build"),
        ],
    ),
]

DTYPES = [torch.float32, torch.float64]


@pytest.fixture
def generator(request):
    # A fresh, reproducible stream per test (seeded from the test's name).
    g = torch.Generator()
    g.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    return g


@pytest.fixture
def pretend_memory(monkeypatch):
    """pretend_memory(bytes): the memory checks before large allocations see a
    machine of that size (to test them without allocating)."""
    import momentum_ops._checks as checks

    def pretend(size: int) -> None:
        monkeypatch.setattr(checks, "_machine_memory", lambda: size)

    return pretend


@pytest.fixture(scope="session")
def cpp_runner(tmp_path_factory):
    """The C++ TorchScript runner of test/cpp, built once per session."""
    from scripting import build_cpp_runner

    return build_cpp_runner(str(tmp_path_factory.mktemp("cpp_build")))
