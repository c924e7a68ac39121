"""``python -m momentum_ops.info``: what this build is, what it runs on, and
which ops it registered. If the library cannot load, importing the package
fails first and Python exits non-zero with the import check's message."""

from __future__ import annotations

import sys

import torch

import momentum_ops


def registered_ops() -> list[str]:
    names = torch._C._dispatch_get_all_op_names()
    return sorted(n for n in names if n.startswith("momentum::"))


def report() -> str:
    build = momentum_ops.BUILD_INFO
    lines = [f"momentum_ops {build['version']}", f"  library: {momentum_ops.LIBRARY_PATH}", "  build:"]
    for key in (
        "torch_full_version", "target_torch", "tested_torch", "cuda_version", "nvcc_version",
        "cuda_arch_list", "cuda_choice", "compiler", "git_revision", "built_at",
    ):
        lines.append(f"    {key}: {build.get(key)}")
    lines.append(f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none: CPU-only build'})")
    if torch.cuda.is_available():
        lines.append(f"CUDA available: yes, {torch.cuda.device_count()} device(s)")
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"  cuda:{i} {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB")
    else:
        lines.append("CUDA available: no")
    if build["cuda_version"] is None:
        lines.append("  (this build has CPU kernels only)")
    ops = registered_ops()
    lines.append(f"ops ({len(ops)}):")
    lines += [f"  torch.ops.{name.replace('::', '.')}" for name in ops]
    return "\n".join(lines)


def main() -> int:
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
