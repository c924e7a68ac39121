"""The repository's own checks catch what they are for."""

import os
import shutil
import subprocess
import sys

import pytest

import momentum_ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_tool(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)


def test_check_abi_passes_on_the_built_library():
    result = run_tool("tools/check_abi.py", momentum_ops.LIBRARY_PATH)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "torch_library_impl" in result.stdout


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_check_abi_fails_on_a_torch_cpp_symbol(tmp_path):
    # A library calling c10's TORCH_CHECK failure handler: unstable C++ ABI.
    source = tmp_path / "bad.c"
    source.write_text(
        "extern void _ZN3c106detail14torchCheckFailEPKcS2_jS2_(void);\n"
        "extern int aoti_torch_abi_version(void);\n"
        "void f(void) { _ZN3c106detail14torchCheckFailEPKcS2_jS2_(); aoti_torch_abi_version(); }\n"
    )
    library = tmp_path / "libbad.so"
    subprocess.run(["cc", "-shared", "-fPIC", str(source), "-o", str(library)], check=True)
    result = run_tool("tools/check_abi.py", str(library))
    assert result.returncode == 1
    assert "_ZN3c106detail14torchCheckFailEPKcS2_jS2_: a torch C++ symbol" in result.stdout
