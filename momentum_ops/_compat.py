"""Checks the installed torch against what the compiled library was built for.

Runs before the library is loaded, so a mismatch is reported as a sentence
with the fix instead of an ``undefined symbol`` error. The functions here take
the versions as arguments so that every failure can be tested.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Optional


class UntestedTorchWarning(UserWarning):
    """torch is newer than the newest release this build was tested with."""


def parse_version(version: str) -> tuple[int, int]:
    """'2.13.0+cpu' -> (2, 13); '2.15.0a0+git123' -> (2, 15)."""
    match = re.match(r"(\d+)\.(\d+)", str(version))
    if not match:
        raise ValueError(f"cannot parse the torch version {version!r}")
    return int(match.group(1)), int(match.group(2))


def _cuda_index(cuda_version: str) -> str:
    major, minor = parse_version(cuda_version)
    return f"https://download.pytorch.org/whl/cu{major}{minor}"


def rebuild_command(build: dict, cpu_only: bool = False) -> str:
    source = build.get("source_dir")
    if not source or not os.path.isdir(source):
        source = "<path to the momentum_ops source>"
    env = "MOMENTUM_OPS_CPU_ONLY=1 " if cpu_only else ""
    return f"{env}pip install --no-build-isolation --force-reinstall --no-deps {source}"


def torch_install_command(build: dict) -> str:
    spec = f'"torch>={build["target_torch"]}"'
    if build.get("cuda_version"):
        return f"pip install {spec} --index-url {_cuda_index(build['cuda_version'])}"
    return f"pip install {spec}"


def _describe_build(build: dict) -> str:
    cuda = f"CUDA {build['cuda_version']}" if build.get("cuda_version") else "CPU only"
    return (
        f"momentum_ops {build['version']} was built against torch {build['torch_version']} "
        f"({cuda}, stable ABI target torch {build['target_torch']})"
    )


def check_torch(build: dict, torch_version: str, torch_cuda: Optional[str]) -> None:
    """Raises ImportError if this torch cannot run the build; warns if it is
    newer than the newest release tested."""
    found = parse_version(torch_version)
    target = parse_version(build["target_torch"])
    if found < target:
        raise ImportError(
            f"{_describe_build(build)} and needs torch >= {build['target_torch']}; "
            f"found torch {torch_version}.\n"
            f"Fix: {torch_install_command(build)}"
        )
    built_cuda = build.get("cuda_version")
    if built_cuda and torch_cuda is None:
        raise ImportError(
            f"{_describe_build(build)}: its CUDA kernels need a CUDA {parse_version(built_cuda)[0]}.x "
            f"build of torch; found torch {torch_version}, a CPU-only build.\n"
            f"Fix: {torch_install_command(build)}\n"
            f"(or build momentum_ops for this torch, CPU only: {rebuild_command(build, cpu_only=True)})"
        )
    if built_cuda and parse_version(built_cuda)[0] != parse_version(torch_cuda)[0]:
        raise ImportError(
            f"{_describe_build(build)}: its CUDA kernels need a CUDA {parse_version(built_cuda)[0]}.x "
            f"build of torch; found torch {torch_version} with CUDA {torch_cuda}.\n"
            f"Fix: {torch_install_command(build)}\n"
            f"(or rebuild momentum_ops against this torch: {rebuild_command(build)})"
        )
    if found > parse_version(build["tested_torch"]):
        warnings.warn(
            f"momentum_ops {build['version']} was tested with torch up to {build['tested_torch']}; "
            f"found torch {torch_version}. It uses only the stable ABI and should work; if it "
            f"does not, rebuild it: {rebuild_command(build)}",
            UntestedTorchWarning,
            stacklevel=3,
        )


def load_failure_message(build: dict, torch_version: str, path: str, error: BaseException) -> str:
    # torch.ops.load_library wraps the loader's own message (undefined symbol, ...).
    cause = error.__cause__ or error
    return (
        f"momentum_ops could not load its compiled library {path}:\n  {cause}\n"
        f"{_describe_build(build)}; this is torch {torch_version}.\n"
        f"Fix: rebuild it against this torch: {rebuild_command(build)}"
    )


def not_built_message(package_dir: str) -> str:
    return (
        f"momentum_ops in {package_dir} has not been built (no compiled library or build "
        f"record next to it).\nFix: pip install --no-build-isolation -e {os.path.dirname(package_dir)}"
    )
