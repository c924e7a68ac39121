// Linear blend skinning: skeleton state [..., J, 8] -> points [..., V, 3].
// Argument checking shared by the CPU and CUDA kernels.
#pragma once

#include "../common/checks.h"
#include "../common/math.h"

namespace momentum_ops {

// The ops' names and C++ signatures (one place for both devices' entry points).
constexpr const char* kSkinForward = "skin_points";
constexpr const char* kSkinBackward = "skin_points_backward";
constexpr const char* kBlendedSkinForward = "skin_blended_points";
constexpr const char* kBlendedSkinBackward = "skin_blended_points_backward";
#define MOMENTUM_SKIN_PARAMS \
  Tensor skeleton_state, Tensor inverse_bind_pose, Tensor rest_points, Tensor skin_indices, Tensor skin_weights
#define MOMENTUM_SKIN_ARGS skeleton_state, inverse_bind_pose, rest_points, skin_indices, skin_weights
#define MOMENTUM_BLENDED_SKIN_PARAMS                                                                 \
  Tensor skeleton_state, Tensor inverse_bind_pose, Tensor rest_points, Tensor blend_shapes, Tensor blend_weights, \
      Tensor skin_indices, Tensor skin_weights
#define MOMENTUM_BLENDED_SKIN_ARGS \
  skeleton_state, inverse_bind_pose, rest_points, blend_shapes, blend_weights, skin_indices, skin_weights

struct SkinArgs {
  Tensor skeleton_state;  // contiguous [B..., J, 8]
  Tensor inverse_bind_pose;  // contiguous [J, 4, 4]
  Tensor rest_points;  // contiguous [V, 3] or [B..., V, 3]
  Tensor skin_indices;  // contiguous [V, K], int32 or int64
  Tensor skin_weights;  // contiguous [V, K]
  Tensor blend_shapes;  // contiguous [S, V, 3] (skin_blended_points only)
  Tensor blend_weights;  // contiguous [B..., S] (skin_blended_points only)
  std::vector<int64_t> batch_shape;
  int64_t batch = 0;
  int64_t joints = 0;
  int64_t vertices = 0;
  int64_t influences = 0;
  int64_t shapes = 0;  // S blend shapes
  bool batched_points = false;  // rest_points has the batch dims
  // The backward's rest-point gradient is per item ([B..., V, 3]): per-item
  // rest points, or blended ones (their gradient goes on to the blend).
  bool per_item_rest_grad = false;

  // The rest points of item b.
  template <typename T>
  RestPoints<T> rest(int64_t b) const {
    const T* points = static_cast<const T*>(rest_points.const_data_ptr());
    if (shapes == 0) {
      return {points + (batched_points ? b * vertices * 3 : 0), nullptr, nullptr, 0, vertices};
    }
    return {points, static_cast<const T*>(blend_shapes.const_data_ptr()),
            static_cast<const T*>(blend_weights.const_data_ptr()) + b * shapes, shapes, vertices};
  }
};

// Validates shapes, dtypes, devices and (on the CPU) the index range.
SkinArgs check_skin(
    const char* op,
    const Tensor& skeleton_state,
    const Tensor& inverse_bind_pose,
    const Tensor& rest_points,
    const Tensor& skin_indices,
    const Tensor& skin_weights);

// skin_points of blended rest points: rest_points [V, 3], blend_shapes
// [S, V, 3] and blend_weights [B..., S] on top of check_skin's checks.
SkinArgs check_blended_skin(
    const char* op,
    const Tensor& skeleton_state,
    const Tensor& inverse_bind_pose,
    const Tensor& rest_points,
    const Tensor& blend_shapes,
    const Tensor& blend_weights,
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
