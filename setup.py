"""Builds momentum_ops: one compiled library (no Python in it) against PyTorch's
stable C ABI, plus the pure-Python package that loads it.

Environment:
  FORCE_CUDA=1             build the CUDA kernels (fail if that is impossible)
  MOMENTUM_OPS_CPU_ONLY=1  build the CPU kernels only
  TORCH_CUDA_ARCH_LIST     CUDA architectures (default: the visible GPUs, or
                           DEFAULT_CUDA_ARCHS when none is visible)
  EIGEN3_INCLUDE_DIR       where Eigen lives (else cmeel-eigen, else the system)
  MAX_JOBS                 parallel compile jobs (ninja)
  MOMENTUM_OPS_SANITIZE=1  build with AddressSanitizer and UndefinedBehaviorSanitizer
                           (CPU kernels; see tools/sanitize.sh)
"""

import datetime
import glob
import os
import re
import subprocess
import sys
import sysconfig

from setuptools import find_packages, setup

import torch

# torch guesses CUDA_HOME from the `nvcc` on PATH, which can be a wrapper script
# outside the toolkit; the toolkit's usual home is the better guess.
if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")) and os.path.exists(
    "/usr/local/cuda/bin/nvcc"
):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

from torch.utils import cpp_extension  # noqa: E402  (reads CUDA_HOME on import)

ROOT = os.path.dirname(os.path.abspath(__file__))
VERSION = "0.1.0"
# The oldest torch whose stable C ABI covers everything the library calls
# (torch_parallel_for, torch_call_dispatcher, torch_library_impl, ...).
TARGET_TORCH = (2, 10)
# The newest torch release this version was tested with; newer ones warn.
TESTED_TORCH = (2, 14)
# sm_90 (H100/H200) is always in; PTX of the newest lets future GPUs JIT.
DEFAULT_CUDA_ARCHS = "7.5;8.0;9.0;10.0;12.0+PTX"


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def find_eigen():
    candidates = []
    if os.environ.get("EIGEN3_INCLUDE_DIR"):
        candidates.append(os.environ["EIGEN3_INCLUDE_DIR"])
    for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        candidates.append(os.path.join(base, "cmeel.prefix", "include", "eigen3"))
    candidates += ["/usr/include/eigen3", "/usr/local/include/eigen3"]
    for path in candidates:
        if os.path.isfile(os.path.join(path, "Eigen", "Core")):
            return path
    sys.exit(
        "momentum_ops: Eigen 3 was not found (looked in: "
        + ", ".join(candidates)
        + ").\nInstall it with one of:\n"
        "  pip install cmeel-eigen\n"
        "  apt-get install libeigen3-dev\n"
        "or point EIGEN3_INCLUDE_DIR at the folder that holds Eigen/Core."
    )


def want_cuda():
    if env_flag("MOMENTUM_OPS_CPU_ONLY"):
        return False, "MOMENTUM_OPS_CPU_ONLY=1"
    has_nvcc = cpp_extension.CUDA_HOME is not None and os.path.exists(
        os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc")
    )
    if env_flag("FORCE_CUDA"):
        if torch.version.cuda is None:
            sys.exit(
                f"momentum_ops: FORCE_CUDA=1 but torch {torch.__version__} is a CPU-only "
                "build; install a CUDA build of torch first."
            )
        if not has_nvcc:
            sys.exit("momentum_ops: FORCE_CUDA=1 but nvcc was not found; set CUDA_HOME.")
        return True, "FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, "torch is a CPU-only build"
    if not has_nvcc:
        return False, "nvcc not found (set CUDA_HOME)"
    return True, "CUDA build of torch and nvcc found"


def command_output(cmd):
    try:
        return subprocess.check_output(cmd, cwd=ROOT, stderr=subprocess.DEVNULL, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def nvcc_version():
    out = command_output([os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc"), "--version"])
    match = re.search(r"release (\d+\.\d+)", out or "")
    return match.group(1) if match else None


def git_revision():
    rev = command_output(["git", "rev-parse", "--short=12", "HEAD"])
    if rev and command_output(["git", "status", "--porcelain", "--untracked-files=no"]):
        rev += "-dirty"
    return rev


def write_build_info(with_cuda, reason, arch_list):
    compiler = command_output([os.environ.get("CXX", "c++"), "--version"])
    info = {
        "version": VERSION,
        "torch_version": torch.__version__.split("+")[0],
        "torch_full_version": str(torch.__version__),
        "target_torch": "%d.%d" % TARGET_TORCH,
        "tested_torch": "%d.%d" % TESTED_TORCH,
        "cuda_version": torch.version.cuda if with_cuda else None,
        "nvcc_version": nvcc_version() if with_cuda else None,
        "cuda_arch_list": arch_list if with_cuda else None,
        "cuda_choice": reason,
        "compiler": compiler.splitlines()[0] if compiler else None,
        "git_revision": git_revision(),
        "source_dir": ROOT,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with open(os.path.join(ROOT, "momentum_ops", "_build_info.py"), "w") as f:
        f.write("# Generated by setup.py: what this build was made with. Do not edit.\n")
        f.write("BUILD_INFO = {\n")
        for key, value in info.items():
            f.write(f"    {key!r}: {value!r},\n")
        f.write("}\n")


def extension():
    with_cuda, reason = want_cuda()
    arch_list = None
    if with_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        if not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
    if with_cuda:
        arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "visible GPUs")
    print(f"momentum_ops: CUDA kernels {'on' if with_cuda else 'off'} ({reason})", flush=True)
    write_build_info(with_cuda, reason, arch_list)

    target = "-DTORCH_TARGET_VERSION=0x%02x%02x000000000000" % TARGET_TORCH
    cxx_flags = ["-O3", "-std=c++17", target, "-fvisibility=hidden", "-Wall", "-Wno-unknown-pragmas"]
    link_flags = []
    if env_flag("MOMENTUM_OPS_SANITIZE"):
        sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g"]
        cxx_flags = [f for f in cxx_flags if f != "-O3"] + ["-O1"] + sanitize
        link_flags = sanitize
    sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    if with_cuda:
        sources = [s for s in sources if not s.endswith("no_cuda.cpp")]
        sources += sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
    kwargs = dict(
        name="momentum_ops._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc"), find_eigen()],
        py_limited_api=True,
        extra_link_args=link_flags,
        extra_compile_args={
            "cxx": cxx_flags,
            "nvcc": ["-O3", "-std=c++17", target, "--expt-relaxed-constexpr",
                     "-Xcompiler=-fvisibility=hidden", "-lineinfo"],
        },
    )
    if with_cuda:
        # USE_CUDA exposes the CUDA parts of the stable C shim (current stream).
        kwargs["define_macros"] = [("USE_CUDA", "1")]
        return cpp_extension.CUDAExtension(**kwargs)
    kwargs["extra_compile_args"] = cxx_flags
    return cpp_extension.CppExtension(**kwargs)


class BuildExtension(cpp_extension.BuildExtension):
    """Keeps the compiled library free of torch_python and Python.h."""

    def build_extensions(self):
        for ext in self.extensions:
            ext.libraries = [lib for lib in ext.libraries if lib != "torch_python"]
        super().build_extensions()


setup(
    name="momentum_ops",
    version=VERSION,
    description="Forward kinematics, skinning and inverse kinematics as PyTorch dispatcher ops "
    "(CPU and CUDA, stable ABI)",
    packages=find_packages(include=["momentum_ops", "momentum_ops.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
    python_requires=">=3.10",
    install_requires=["torch>=%d.%d" % TARGET_TORCH, "numpy", "roma"],
    extras_require={"gltf": ["pygltflib"], "render": ["matplotlib"], "test": ["pytest", "scipy", "pygltflib", "matplotlib"]},
)
