// Forward kinematics: joint parameters [..., J, 7] -> skeleton state [..., J, 8].
// Argument checking shared by the CPU and CUDA kernels.
#pragma once

#include "../common/checks.h"

namespace momentum_ops {

struct FkForwardArgs {
  Tensor joint_parameters;  // contiguous [B..., J, 7]
  Tensor offsets;  // contiguous [J, 3]
  Tensor pre_rotations;  // contiguous [J, 4]
  std::vector<int32_t> topology;  // math.h topology codes
  std::vector<int64_t> batch_shape;
  int64_t batch = 0;
  int64_t joints = 0;
};

FkForwardArgs check_fk_forward(
    const Tensor& joint_parameters,
    const Tensor& parents,
    const Tensor& offsets,
    const Tensor& pre_rotations);

struct FkBackwardArgs : FkForwardArgs {
  Tensor grad_skeleton_state;  // contiguous [B..., J, 8]
  Tensor skeleton_state;  // contiguous [B..., J, 8]
};

FkBackwardArgs check_fk_backward(
    const Tensor& grad_skeleton_state,
    const Tensor& joint_parameters,
    const Tensor& parents,
    const Tensor& offsets,
    const Tensor& pre_rotations,
    const Tensor& skeleton_state);

// grad_offsets = sum over the batch of the translation gradients.
Tensor offsets_gradient(const Tensor& grad_joint_parameters, int64_t batch, int64_t joints);

}  // namespace momentum_ops
