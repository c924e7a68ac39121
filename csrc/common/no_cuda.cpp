// Compiled only into CPU-only builds: CUDA inputs get an error that says how
// to get the CUDA kernels, instead of the dispatcher's generic one.
#include <torch/csrc/stable/library.h>

#include <stdexcept>

namespace {
void built_without_cuda(StableIValue*, uint64_t, uint64_t) {
  throw std::runtime_error(
      "momentum_ops was built without its CUDA kernels (a CPU-only build), so "
      "it cannot run on CUDA tensors. Rebuild it with a CUDA build of torch and "
      "nvcc: FORCE_CUDA=1 pip install --no-build-isolation --force-reinstall "
      "--no-deps <momentum_ops source>  (python -m momentum_ops.info shows how "
      "this build was made)");
}
}  // namespace

STABLE_TORCH_LIBRARY_IMPL(momentum, CUDA, m) {
  for (const char* op : {
           "joint_parameters_to_skeleton_state",
           "joint_parameters_to_skeleton_state_backward",
           "skin_points",
           "skin_points_backward",
           "ik_solve",
           "ik_solve_backward",
           "position_residuals_and_jacobian",
       }) {
    m.impl(op, &built_without_cuda);
  }
}
