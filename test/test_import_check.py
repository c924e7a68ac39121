"""The import-time torch check: each failure is simulated and gives its message."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import momentum_ops
from momentum_ops import _compat

BUILD = dict(momentum_ops.BUILD_INFO)
CUDA_BUILD = dict(BUILD, cuda_version="13.0", nvcc_version="13.0")
CPU_BUILD = dict(BUILD, cuda_version=None)


def test_parse_version():
    assert _compat.parse_version("2.13.0+cpu") == (2, 13)
    assert _compat.parse_version("2.15.0a0+git1234") == (2, 15)
    assert _compat.parse_version("12.8") == (12, 8)


def test_old_torch_is_refused():
    with pytest.raises(ImportError) as info:
        _compat.check_torch(CPU_BUILD, "2.9.1", None)
    message = str(info.value)
    assert "needs torch >= 2.10; found torch 2.9.1" in message
    assert 'Fix: pip install "torch>=2.10"' in message


def test_cuda_build_on_cpu_torch_is_refused():
    with pytest.raises(ImportError) as info:
        _compat.check_torch(CUDA_BUILD, "2.13.0+cpu", None)
    message = str(info.value)
    assert "CUDA 13.0" in message and "found torch 2.13.0+cpu, a CPU-only build" in message
    assert "Fix: pip install \"torch>=2.10\" --index-url https://download.pytorch.org/whl/cu130" in message
    assert "MOMENTUM_OPS_CPU_ONLY=1 pip install --no-build-isolation --force-reinstall --no-deps" in message


def test_other_cuda_major_is_refused():
    with pytest.raises(ImportError, match=r"found torch 2.12.0\+cu128 with CUDA 12.8"):
        _compat.check_torch(CUDA_BUILD, "2.12.0+cu128", "12.8")
    _compat.check_torch(CUDA_BUILD, "2.11.0+cu132", "13.2")  # same major: fine


def test_cpu_build_runs_on_any_torch():
    _compat.check_torch(CPU_BUILD, "2.11.0+cu130", "13.0")
    _compat.check_torch(CPU_BUILD, "2.10.0+cpu", None)


def test_newer_torch_warns():
    with pytest.warns(_compat.UntestedTorchWarning, match=r"tested with torch up to 2.14; found torch 2.16.0"):
        _compat.check_torch(CPU_BUILD, "2.16.0", None)


def test_load_failure_message():
    try:
        try:
            raise OSError("/x/_C.so: undefined symbol: _ZN3c106detail14torchCheckFail")
        except OSError as inner:
            raise OSError("Could not load this library: /x/_C.so") from inner
    except OSError as error:
        message = _compat.load_failure_message(BUILD, "2.12.0", "/x/_C.so", error)
    assert "undefined symbol: _ZN3c106detail14torchCheckFail" in message
    assert f"built against torch {BUILD['torch_version']}" in message and "this is torch 2.12.0" in message
    assert "Fix: rebuild it against this torch: pip install --no-build-isolation --force-reinstall --no-deps" in message


# ------------------------------------------------------ end to end, in subprocesses
# Subprocesses start outside the repository, so that a source checkout in the
# working directory cannot shadow the package under test.
NEUTRAL_DIR = os.path.dirname(os.path.abspath(__file__))


def run_python(code, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd or NEUTRAL_DIR, env=env
    )


def expect_import_error(code, *fragments):
    result = run_python(
        code
        + "\ntry:\n    import momentum_ops\nexcept ImportError as e:\n    print('IMPORT ERROR:', e)\n"
        "    print('CAUSE:', type(e.__cause__).__name__)\nelse:\n    print('IMPORTED')\n"
    )
    assert result.returncode == 0, result.stderr
    assert "IMPORT ERROR:" in result.stdout, result.stdout
    for fragment in fragments:
        assert fragment in result.stdout, result.stdout
    return result.stdout


def test_simulated_old_torch():
    expect_import_error("import torch\ntorch.__version__ = '2.9.1'", "found torch 2.9.1", "Fix: pip install")


FAKE_BUILD = """
import importlib.util, os, sys, types, torch
spec = importlib.util.find_spec("momentum_ops")
info = {}
exec(open(os.path.join(spec.submodule_search_locations[0], "_build_info.py")).read(), info)
fake = types.ModuleType("momentum_ops._build_info")
fake.BUILD_INFO = dict(info["BUILD_INFO"], cuda_version="13.0")
sys.modules["momentum_ops._build_info"] = fake
"""


def test_simulated_cuda_build_on_cpu_torch():
    expect_import_error(FAKE_BUILD + "torch.version.cuda = None", "a CPU-only build", "--index-url")


def test_simulated_cuda_major_mismatch():
    expect_import_error(FAKE_BUILD + "torch.version.cuda = '12.6'", "with CUDA 12.6", "cu130")


def test_simulated_newer_torch_warns_and_loads():
    result = run_python(
        "import warnings, torch\ntorch.__version__ = '2.99.0'\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n    import momentum_ops\n"
        "print([str(x.message) for x in w])\nprint(torch.ops.momentum.joint_parameters_to_skeleton_state)"
    )
    assert result.returncode == 0, result.stderr
    assert "tested with torch up to" in result.stdout and "found torch 2.99.0" in result.stdout


@pytest.fixture
def broken_copy(tmp_path):
    """A copy of the installed package whose library cannot be loaded."""
    target = tmp_path / "momentum_ops"
    shutil.copytree(os.path.dirname(momentum_ops.__file__), target, ignore=shutil.ignore_patterns("__pycache__"))
    with open(target / "_C.so", "wb") as f:
        f.write(b"\x7fELF not really a library")
    return tmp_path


def test_library_that_fails_to_load(broken_copy):
    env = dict(os.environ, PYTHONPATH=str(broken_copy))
    result = run_python(
        "try:\n    import momentum_ops\nexcept ImportError as e:\n"
        "    print('IMPORT ERROR:', e)\n    print('CAUSE:', type(e.__cause__).__name__)\n",
        cwd=str(broken_copy),
        env=env,
    )
    assert "IMPORT ERROR: momentum_ops could not load its compiled library" in result.stdout, result.stdout + result.stderr
    assert f"built against torch {BUILD['torch_version']}" in result.stdout
    assert "Fix: rebuild it against this torch" in result.stdout
    assert "CAUSE: OSError" in result.stdout


def test_info_exits_nonzero_when_the_library_cannot_load(broken_copy):
    env = dict(os.environ, PYTHONPATH=str(broken_copy))
    result = subprocess.run(
        [sys.executable, "-m", "momentum_ops.info"], capture_output=True, text=True, cwd=str(broken_copy), env=env
    )
    assert result.returncode != 0
    assert "momentum_ops could not load its compiled library" in result.stderr + result.stdout


def test_info_reports_build_torch_and_ops():
    result = subprocess.run(
        [sys.executable, "-m", "momentum_ops.info"], capture_output=True, text=True, cwd=NEUTRAL_DIR
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"momentum_ops {BUILD['version']}" in out
    assert "target_torch: 2.10" in out
    assert "torch.ops.momentum.joint_parameters_to_skeleton_state" in out
    assert "CUDA available:" in out


def test_unbuilt_source_tree_says_how_to_build(tmp_path):
    target = tmp_path / "momentum_ops"
    shutil.copytree(
        os.path.dirname(momentum_ops.__file__), target,
        ignore=shutil.ignore_patterns("__pycache__", "_C.so", "_build_info.py"),
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    result = run_python("import momentum_ops", cwd=str(tmp_path), env=env)
    assert result.returncode != 0
    assert "has not been built" in result.stderr and "pip install --no-build-isolation -e" in result.stderr


def test_every_public_name_is_there():
    import momentum_ops

    assert "io" in momentum_ops.__all__
    for name in momentum_ops.__all__:
        assert getattr(momentum_ops, name) is not None, name
