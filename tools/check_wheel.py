#!/usr/bin/env python3
"""Checks a built wheel: one compiled library (momentum_ops/_C.so), no bundled
torch or CUDA libraries, and a CPython-version-independent (abi3) tag.

    python tools/check_wheel.py dist/momentum_ops-*.whl
"""

import re
import sys
import zipfile


def main(path: str) -> int:
    names = zipfile.ZipFile(path).namelist()
    libraries = [n for n in names if re.search(r"\.so(\.|$)", n)]
    problems = []
    if libraries != ["momentum_ops/_C.so"]:
        problems.append(f"expected exactly one library, momentum_ops/_C.so; found {libraries}")
    # Only the package and its metadata: no torch, CUDA or other libraries
    # (e.g. a vendored *.libs/ folder) beside it.
    outside = [n for n in names if not (n.startswith("momentum_ops/") or ".dist-info/" in n)]
    if outside:
        problems.append(f"bundles files outside the package (torch, CUDA or other libraries?): {outside[:10]}")
    bundled = [n for n in names if re.search(r"lib(torch|c10|cuda|cudart|nvrtc|cublas)[^/]*\.so", n, re.I)]
    if bundled:
        problems.append(f"bundles torch or CUDA libraries: {bundled}")
    if "-abi3-" not in path:
        problems.append(f"not an abi3 wheel (one wheel for every CPython 3): {path}")
    print(f"{path}: {len(names)} files; libraries: {libraries}")
    for p in problems:
        print(f"FAILED: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
