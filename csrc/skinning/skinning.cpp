#include "skinning.h"

#include <torch/csrc/stable/library.h>

namespace momentum_ops {

SkinArgs check_skin(
    const char* op,
    const Tensor& skeleton_state,
    const Tensor& inverse_bind_pose,
    const Tensor& rest_points,
    const Tensor& skin_indices,
    const Tensor& skin_weights) {
  SkinArgs args;
  check_floating(op, "skeleton_state", skeleton_state);
  MOMENTUM_CHECK(
      skeleton_state.dim() >= 2, op, ": skeleton_state must have shape [..., J, 8], got ",
      shape_string(skeleton_state));
  args.joints = skeleton_state.size(-2);
  args.batch = check_batched_shape(op, "skeleton_state", skeleton_state, {-1, 8}, "[..., J, 8]");
  args.batch_shape = batch_sizes(skeleton_state, 2);

  check_like(op, "inverse_bind_pose", inverse_bind_pose, "skeleton_state", skeleton_state);
  check_shape(op, "inverse_bind_pose", inverse_bind_pose, {args.joints, 4, 4},
              "[J, 4, 4] with J from skeleton_state");

  check_like(op, "rest_points", rest_points, "skeleton_state", skeleton_state);
  MOMENTUM_CHECK(
      rest_points.dim() >= 2 && rest_points.size(-1) == 3, op,
      ": rest_points must have shape [V, 3] or [..., V, 3], got ", shape_string(rest_points));
  args.vertices = rest_points.size(-2);
  if (rest_points.dim() > 2) {
    MOMENTUM_CHECK(
        batch_sizes(rest_points, 2) == args.batch_shape, op,
        ": rest_points has batch dims ", shape_string(rest_points),
        " but skeleton_state has ", shape_string(skeleton_state),
        "; per-item rest points need the same batch dims, or pass [V, 3]");
    args.batched_points = true;
  }

  check_defined(op, "skin_indices", skin_indices);
  const ScalarType index_type = skin_indices.scalar_type();
  MOMENTUM_CHECK(
      index_type == ScalarType::Int || index_type == ScalarType::Long, op,
      ": skin_indices must be int32 or int64, got ", dtype_string(index_type));
  check_same_device(op, "skin_indices", skin_indices, "skeleton_state", skeleton_state);
  MOMENTUM_CHECK(
      skin_indices.dim() == 2 && skin_indices.size(0) == args.vertices, op,
      ": skin_indices must have shape [V, K] with V = ", args.vertices,
      " (from rest_points), got ", shape_string(skin_indices));
  args.influences = skin_indices.size(1);
  MOMENTUM_CHECK(args.influences >= 1, op, ": skin_indices needs at least one influence per vertex (K >= 1)");
  check_like(op, "skin_weights", skin_weights, "skeleton_state", skeleton_state);
  check_shape(op, "skin_weights", skin_weights, {args.vertices, args.influences},
              "[V, K] like skin_indices");

  args.per_item_rest_grad = args.batched_points;
  args.skeleton_state = as_contiguous(skeleton_state);
  args.inverse_bind_pose = as_contiguous(inverse_bind_pose);
  args.rest_points = as_contiguous(rest_points);
  args.skin_indices = as_contiguous(skin_indices);
  args.skin_weights = as_contiguous(skin_weights);

  if (args.skin_indices.is_cpu()) {
    const int64_t n = args.skin_indices.numel();
    const bool wide = index_type == ScalarType::Long;
    const void* data = args.skin_indices.const_data_ptr();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t value = wide ? static_cast<const int64_t*>(data)[i]
                                 : static_cast<const int32_t*>(data)[i];
      if (value < 0 || value >= args.joints) {
        fail_skin_index(op, args, i, value);
      }
    }
  }
  return args;
}

SkinArgs check_blended_skin(
    const char* op,
    const Tensor& skeleton_state,
    const Tensor& inverse_bind_pose,
    const Tensor& rest_points,
    const Tensor& blend_shapes,
    const Tensor& blend_weights,
    const Tensor& skin_indices,
    const Tensor& skin_weights) {
  check_floating(op, "skeleton_state", skeleton_state);
  check_like(op, "rest_points", rest_points, "skeleton_state", skeleton_state);
  MOMENTUM_CHECK(
      rest_points.dim() == 2, op, ": rest_points must have shape [V, 3] (the blend makes them per item), got ",
      shape_string(rest_points));
  SkinArgs args = check_skin(op, skeleton_state, inverse_bind_pose, rest_points, skin_indices, skin_weights);
  check_like(op, "blend_shapes", blend_shapes, "skeleton_state", skeleton_state);
  MOMENTUM_CHECK(
      blend_shapes.dim() == 3 && blend_shapes.size(1) == args.vertices && blend_shapes.size(2) == 3, op,
      ": blend_shapes must have shape [S, V, 3] with V = ", args.vertices, " (from rest_points), got ",
      shape_string(blend_shapes));
  args.shapes = blend_shapes.size(0);
  check_like(op, "blend_weights", blend_weights, "skeleton_state", skeleton_state);
  check_shape(op, "blend_weights", blend_weights, concat(args.batch_shape, {args.shapes}),
              "[..., S] with the batch dims of skeleton_state and S from blend_shapes");
  args.blend_shapes = as_contiguous(blend_shapes);
  args.blend_weights = as_contiguous(blend_weights);
  args.per_item_rest_grad = true;
  return args;
}

Tensor check_skin_grad(const char* op, const SkinArgs& args, const Tensor& grad_points) {
  check_like(op, "grad_points", grad_points, "skeleton_state", args.skeleton_state);
  check_shape(op, "grad_points", grad_points, concat(args.batch_shape, {args.vertices, 3}),
              "[..., V, 3] like the forward's output");
  return as_contiguous(grad_points);
}

void fail_skin_index(const char* op, const SkinArgs& args, int64_t bad, int64_t value) {
  fail(op, ": skin_indices[", bad / args.influences, ", ", bad % args.influences, "] = ", value,
       " is out of range; skin indices must be joint indices in [0, ", args.joints, ")");
}

}  // namespace momentum_ops

// Points are (sum_k w_k * M(state[i_k]) * inverse_bind_pose[i_k]) * [x; 1].
// Gradients go to skeleton_state, rest_points and skin_weights.
STABLE_TORCH_LIBRARY_FRAGMENT(momentum, m) {
  m.def(
      "skin_points(Tensor skeleton_state, Tensor inverse_bind_pose, Tensor rest_points, "
      "Tensor skin_indices, Tensor skin_weights) -> Tensor");
  m.def(
      "skin_points_backward(Tensor grad_points, Tensor skeleton_state, Tensor inverse_bind_pose, "
      "Tensor rest_points, Tensor skin_indices, Tensor skin_weights) -> (Tensor, Tensor, Tensor)");
  // The same with rest points rest_points + sum_s blend_weights[..., s] * blend_shapes[s],
  // blended per vertex inside the kernel. The backward returns the gradient of
  // the blended points [..., V, 3] in the middle; autograd takes it on to the
  // rest points, blend shapes and blend weights.
  m.def(
      "skin_blended_points(Tensor skeleton_state, Tensor inverse_bind_pose, Tensor rest_points, "
      "Tensor blend_shapes, Tensor blend_weights, Tensor skin_indices, Tensor skin_weights) -> Tensor");
  m.def(
      "skin_blended_points_backward(Tensor grad_points, Tensor skeleton_state, Tensor inverse_bind_pose, "
      "Tensor rest_points, Tensor blend_shapes, Tensor blend_weights, Tensor skin_indices, "
      "Tensor skin_weights) -> (Tensor, Tensor, Tensor)");
}
