// Linear blend skinning: skeleton state [..., J, 8] -> points [..., V, 3].
// Argument checking shared by the CPU and CUDA kernels.
#pragma once

#include "../common/checks.h"

namespace momentum_ops {

struct SkinArgs {
  Tensor skeleton_state;  // contiguous [B..., J, 8]
  Tensor inverse_bind_pose;  // contiguous [J, 4, 4]
  Tensor rest_points;  // contiguous [V, 3] or [B..., V, 3]
  Tensor skin_indices;  // contiguous [V, K], int32 or int64
  Tensor skin_weights;  // contiguous [V, K]
  std::vector<int64_t> batch_shape;
  int64_t batch = 0;
  int64_t joints = 0;
  int64_t vertices = 0;
  int64_t influences = 0;
  bool batched_points = false;  // rest_points has the batch dims
};

// Validates shapes, dtypes, devices and (on the CPU) the index range.
SkinArgs check_skin(
    const char* op,
    const Tensor& skeleton_state,
    const Tensor& inverse_bind_pose,
    const Tensor& rest_points,
    const Tensor& skin_indices,
    const Tensor& skin_weights);

// For the backward: grad_points must be [B..., V, 3] like the forward's
// output; returns it contiguous.
Tensor check_skin_grad(const char* op, const SkinArgs& args, const Tensor& grad_points);

// Calls f(T(), I()) with T the float type and I the index type of the call.
template <typename F>
void dispatch_skin(const SkinArgs& args, F&& f) {
  const bool wide = args.skin_indices.scalar_type() == ScalarType::Long;
  dispatch_floating(args.skeleton_state.scalar_type(), [&](auto zero) {
    wide ? f(zero, int64_t(0)) : f(zero, int32_t(0));
  });
}

// Reports the first out-of-range skin index; `bad` is its flat position.
[[noreturn]] void fail_skin_index(const char* op, const SkinArgs& args, int64_t bad, int64_t value);

}  // namespace momentum_ops
