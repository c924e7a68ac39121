#!/usr/bin/env python3
"""Checks that the compiled library imports from torch only PyTorch's stable C
ABI (the C shim functions declared in torch's stable C headers), and that it
does not link Python or torch_python.

    python tools/check_abi.py [path/to/_C.so]

Lists every symbol the library imports from torch's libraries; exits 1 on any
symbol outside the stable C shim (e.g. a mangled at::, c10:: or torch:: C++
symbol), naming it.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import re
import subprocess
import sys

# Mangled-name prefixes of torch's C++ namespaces: never allowed.
FORBIDDEN_NAMESPACES = ("_ZN3c10", "_ZNK3c10", "_ZN2at", "_ZNK2at", "_ZN5torch", "_ZNK5torch", "_ZN6caffe2")
# The stable C ABI: the shim functions declared in these headers (c_shim_aten.h
# holds the versioned ATen op shims that torch/csrc/stable/ops.h calls).
STABLE_C_HEADERS = (
    "include/torch/csrc/inductor/aoti_torch/c/*.h",
    "include/torch/csrc/stable/c/*.h",
    "include/torch/csrc/inductor/aoti_torch/generated/c_shim_aten.h",
)
# The C++ standard library's own symbols (libc10 re-exports some of them).
STD_PREFIXES = ("_ZNSt", "_ZNKSt", "_ZSt", "_ZTISt", "_ZTSSt", "_ZTVSt", "_ZTTSt")


def dynamic_symbols(path: str, defined: bool) -> set[str]:
    flag = "--defined-only" if defined else "--undefined-only"
    out = subprocess.run(["nm", "-D", flag, path], capture_output=True, text=True, check=True).stdout
    symbols = set()
    for line in out.splitlines():
        parts = line.split()
        if parts:
            symbols.add(parts[-1].split("@")[0])
    return symbols


def needed_libraries(path: str) -> list[str]:
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)


def stable_c_declarations(torch_dir: str) -> set[str]:
    names = set()
    for pattern in STABLE_C_HEADERS:
        for header in glob.glob(os.path.join(torch_dir, pattern)):
            text = open(header, encoding="utf-8", errors="replace").read()
            names.update(re.findall(r"\b((?:aoti_torch|torch)_\w+)\s*\(", text))
    return names


def default_library() -> str:
    spec = importlib.util.find_spec("momentum_ops")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("check_abi: momentum_ops is not installed; pass the library's path")
    return os.path.join(spec.submodule_search_locations[0], "_C.so")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("library", nargs="?", default=None)
    args = parser.parse_args()
    library = args.library or default_library()
    spec = importlib.util.find_spec("torch")
    torch_dir = spec.submodule_search_locations[0]

    torch_exports: dict[str, str] = {}
    for lib in sorted(glob.glob(os.path.join(torch_dir, "lib", "*.so*"))):
        for symbol in dynamic_symbols(lib, defined=True):
            torch_exports.setdefault(symbol, os.path.basename(lib))
    stable = stable_c_declarations(torch_dir)
    if not stable:
        sys.exit(f"check_abi: no stable C headers found under {torch_dir}")

    imported = sorted(dynamic_symbols(library, defined=False))
    problems = []
    from_torch = []
    for symbol in imported:
        if symbol.startswith(FORBIDDEN_NAMESPACES):
            problems.append(f"{symbol}: a torch C++ symbol (not stable ABI)")
        elif symbol in torch_exports and not symbol.startswith(STD_PREFIXES):
            from_torch.append(symbol)
            if symbol not in stable:
                problems.append(f"{symbol}: from {torch_exports[symbol]}, not declared in the stable C headers")
    for lib in needed_libraries(library):
        if lib.startswith(("libtorch_python", "libpython")):
            problems.append(f"links {lib}: the library must not depend on Python")

    print(f"library: {library}")
    print(f"torch:   {torch_dir}")
    print(f"NEEDED:  {', '.join(needed_libraries(library))}")
    print(f"{len(from_torch)} symbols imported from torch:")
    for symbol in from_torch:
        mark = "ok  " if symbol in stable else "FAIL"
        print(f"  {mark} {symbol:48s} {torch_exports[symbol]}")
    if problems:
        print(f"\nFAILED: {len(problems)} symbol(s) outside PyTorch's stable C ABI:")
        for p in problems:
            print(f"  {p}")
        return 1
    print("\nOK: only stable C ABI symbols are imported from torch.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
