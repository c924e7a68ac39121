"""Helpers to run a scripted module in a fresh Python process and in the C++
program of test/cpp, built once per session against the installed libtorch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import torch

import momentum_ops

HERE = os.path.dirname(os.path.abspath(__file__))


def run_in_fresh_python(module_path: str, output_path: str, device: str = "cpu") -> torch.Tensor:
    code = textwrap.dedent(
        f"""
        import torch, momentum_ops
        module = torch.jit.load({module_path!r}, map_location={device!r})
        with torch.no_grad():
            out = module(module.example_input.to({device!r}))
        torch.save(out.cpu(), {output_path!r})
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=HERE)
    return torch.load(output_path)


def build_cpp_runner(build_dir: str) -> str:
    """Configures and builds test/cpp; returns the executable's path."""
    if shutil.which("cmake") is None:
        raise RuntimeError("cmake is needed to build the C++ TorchScript test")
    configure = [
        "cmake", "-S", os.path.join(HERE, "cpp"), "-B", build_dir,
        f"-DTORCH_INSTALL_PREFIX={os.path.dirname(torch.__file__)}", "-DCMAKE_BUILD_TYPE=Release",
    ]
    jobs = str(os.cpu_count() or 2)
    for command in (configure, ["cmake", "--build", build_dir, "-j", jobs]):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
            )
    return os.path.join(build_dir, "run_scripted")


def run_in_cpp(executable: str, module_path: str, output_path: str, shape, device: str = "cpu"):
    subprocess.run(
        [executable, momentum_ops.LIBRARY_PATH, module_path, output_path, device],
        check=True,
        capture_output=True,
        text=True,
    )
    return torch.from_numpy(np.fromfile(output_path, dtype=np.float64).reshape(shape))
