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


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["--urdf", os.path.join(ROOT, "test", "assets", "urdf", "pytorch_kinematics", "wx250s.urdf"), "--frames", "2"],
    ["--gltf", os.path.join(ROOT, "test", "assets", "gltf_morph", "AnimatedMorphCube", "AnimatedMorphCube.glb"),
     "--frames", "2"],
], ids=["urdf", "morph"])
def test_render_tool_draws_robots_and_morph_targets(tmp_path, args):
    """The render tool's URDF and morph-target paths write an image."""
    out = tmp_path / "out.png"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "render.py"), *args, "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000
