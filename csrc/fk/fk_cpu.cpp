// CPU kernels of forward kinematics: one batch item per task, joints in order.
#include "fk.h"

#include "../common/math.h"

#include <torch/csrc/stable/library.h>

#include <tuple>
#include <vector>

namespace momentum_ops {
namespace {

// The pre-rotations as unit quaternions, once per call (math.h: quat_normalize).
template <typename T>
std::vector<T> unit_pre_rotations(const Tensor& pre_rotations, int64_t joints) {
  const T* pre = static_cast<const T*>(pre_rotations.const_data_ptr());
  std::vector<T> unit(pre, pre + 4 * joints);
  for (int64_t j = 0; j < joints; ++j) {
    normalize_quaternion_at(unit.data() + 4 * j);
  }
  return unit;
}

// Items per parallel task: enough to amortise scheduling for small skeletons.
int64_t grain_size(int64_t joints) {
  return std::max<int64_t>(1, 4096 / std::max<int64_t>(joints, 1));
}

template <typename T>
void fk_forward_cpu_impl(const FkForwardArgs& args, Tensor& out) {
  const T* jp = static_cast<const T*>(args.joint_parameters.const_data_ptr());
  const T* offsets = static_cast<const T*>(args.offsets.const_data_ptr());
  const std::vector<T> unit_pre = unit_pre_rotations<T>(args.pre_rotations, args.joints);
  const T* pre_rotations = unit_pre.data();
  T* state = static_cast<T*>(out.mutable_data_ptr());
  const int32_t* topology = args.topology.data();
  const int64_t J = args.joints;
  torch::stable::parallel_for(0, args.batch, grain_size(J), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const T* item_jp = jp + b * J * kJointParameters;
      T* item_state = state + b * J * kStateSize;
      for (int64_t j = 0; j < J; ++j) {
        Transform<T> global = local_transform(
            item_jp + j * kJointParameters, load_vec3(offsets + 3 * j),
            load_quat(pre_rotations + 4 * j));
        const int parent = topology_parent(topology[j]);
        if (parent >= 0) {
          global = compose(load_state(item_state + parent * kStateSize), global);
        }
        store_state(global, item_state + j * kStateSize);
      }
    }
  });
}

// Reverse pass: each joint's row of grad_joint_parameters first collects its
// children's wrenches, then is overwritten by the joint's own gradients.
template <typename T>
void fk_backward_cpu_impl(const FkBackwardArgs& args, Tensor& grad_jp) {
  const T* jp = static_cast<const T*>(args.joint_parameters.const_data_ptr());
  const T* offsets = static_cast<const T*>(args.offsets.const_data_ptr());
  const std::vector<T> unit_pre = unit_pre_rotations<T>(args.pre_rotations, args.joints);
  const T* pre_rotations = unit_pre.data();
  const T* state = static_cast<const T*>(args.skeleton_state.const_data_ptr());
  const T* grad_state = static_cast<const T*>(args.grad_skeleton_state.const_data_ptr());
  T* grad = static_cast<T*>(grad_jp.mutable_data_ptr());
  const int32_t* topology = args.topology.data();
  const int64_t J = args.joints;
  torch::stable::parallel_for(0, args.batch, grain_size(J), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const T* item_jp = jp + b * J * kJointParameters;
      const T* item_state = state + b * J * kStateSize;
      const T* item_grad_state = grad_state + b * J * kStateSize;
      T* item_grad = grad + b * J * kJointParameters;
      for (int64_t j = J - 1; j >= 0; --j) {
        const int32_t code = topology[j];
        const Transform<T> global = load_state(item_state + j * kStateSize);
        Wrench<T> subtree = state_gradient_wrench(global, item_grad_state + j * kStateSize);
        if (code & kHasChildren) {
          subtree = subtree + load_wrench(item_grad + j * kJointParameters);
        }
        const Wrench<T> up = joint_backward(
            item_jp + j * kJointParameters, load_vec3(offsets + 3 * j),
            load_quat(pre_rotations + 4 * j), global, subtree,
            item_grad + j * kJointParameters);
        const int parent = topology_parent(code);
        if (parent >= 0) {
          T* target = item_grad + parent * kJointParameters;
          if (code & kFirstChild) {
            store_wrench(up, target);
          } else {
            add_wrench(up, target);
          }
        }
      }
    }
  });
}

Tensor fk_forward_cpu(
    Tensor joint_parameters,
    Tensor parents,
    Tensor offsets,
    Tensor pre_rotations) {
  const FkForwardArgs args =
      check_fk_forward(joint_parameters, parents, offsets, pre_rotations);
  Tensor out = torch::stable::new_empty(
      args.joint_parameters, concat(args.batch_shape, {args.joints, kStateSize}));
  dispatch_floating(args.joint_parameters.scalar_type(),
                    [&](auto zero) { fk_forward_cpu_impl<decltype(zero)>(args, out); });
  return out;
}

std::tuple<Tensor, Tensor> fk_backward_cpu(
    Tensor grad_skeleton_state,
    Tensor joint_parameters,
    Tensor parents,
    Tensor offsets,
    Tensor pre_rotations,
    Tensor skeleton_state) {
  const FkBackwardArgs args = check_fk_backward(
      grad_skeleton_state, joint_parameters, parents, offsets, pre_rotations,
      skeleton_state);
  Tensor grad_jp = torch::stable::new_empty(
      args.joint_parameters, concat(args.batch_shape, {args.joints, kJointParameters}));
  dispatch_floating(args.joint_parameters.scalar_type(),
                    [&](auto zero) { fk_backward_cpu_impl<decltype(zero)>(args, grad_jp); });
  return {grad_jp, offsets_gradient(grad_jp, args.batch, args.joints)};
}

}  // namespace
}  // namespace momentum_ops

STABLE_TORCH_LIBRARY_IMPL(momentum, CPU, m) {
  m.impl("joint_parameters_to_skeleton_state", TORCH_BOX(&momentum_ops::fk_forward_cpu));
  m.impl(
      "joint_parameters_to_skeleton_state_backward",
      TORCH_BOX(&momentum_ops::fk_backward_cpu));
}
