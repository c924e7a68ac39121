#include "fk.h"

#include <torch/csrc/stable/library.h>

namespace momentum_ops {

namespace {
constexpr const char* kForward = "joint_parameters_to_skeleton_state";
constexpr const char* kBackward = "joint_parameters_to_skeleton_state_backward";

void check_skeleton(
    const char* op,
    FkForwardArgs& args,
    const Tensor& joint_parameters,
    const Tensor& parents,
    const Tensor& offsets,
    const Tensor& pre_rotations) {
  check_floating(op, "joint_parameters", joint_parameters);
  MOMENTUM_CHECK(
      joint_parameters.dim() >= 2, op,
      ": joint_parameters must have shape [..., J, 7], got ",
      shape_string(joint_parameters));
  args.joints = joint_parameters.size(-2);
  args.batch = check_batched_shape(
      op, "joint_parameters", joint_parameters, {-1, 7}, "[..., J, 7]");
  args.batch_shape = batch_sizes(joint_parameters, 2);
  check_defined(op, "parents", parents);
  MOMENTUM_CHECK(
      parents.dim() == 1 && parents.size(0) == args.joints, op,
      ": parents must have shape [J] with J = ", args.joints,
      " (joint_parameters has shape ", shape_string(joint_parameters),
      "), got ", shape_string(parents));
  check_like(op, "offsets", offsets, "joint_parameters", joint_parameters);
  check_shape(op, "offsets", offsets, {args.joints, 3}, "[J, 3]");
  check_like(op, "pre_rotations", pre_rotations, "joint_parameters", joint_parameters);
  check_shape(op, "pre_rotations", pre_rotations, {args.joints, 4}, "[J, 4] (xyzw)");
  MOMENTUM_CHECK(
      parents.is_cpu() || parents.is_cuda() == joint_parameters.is_cuda(), op,
      ": parents is on ", device_string(parents),
      "; it must be on the CPU or on the device of joint_parameters (",
      device_string(joint_parameters), ")");
  if (!parents.is_cpu()) {
    check_same_device(op, "parents", parents, "joint_parameters", joint_parameters);
  }
  args.topology = skeleton_topology(op, parents, args.joints);
  args.joint_parameters = as_contiguous(joint_parameters);
  args.offsets = as_contiguous(offsets);
  args.pre_rotations = as_contiguous(pre_rotations);
}
}  // namespace

FkForwardArgs check_fk_forward(
    const Tensor& joint_parameters,
    const Tensor& parents,
    const Tensor& offsets,
    const Tensor& pre_rotations) {
  FkForwardArgs args;
  check_skeleton(kForward, args, joint_parameters, parents, offsets, pre_rotations);
  return args;
}

FkBackwardArgs check_fk_backward(
    const Tensor& grad_skeleton_state,
    const Tensor& joint_parameters,
    const Tensor& parents,
    const Tensor& offsets,
    const Tensor& pre_rotations,
    const Tensor& skeleton_state) {
  FkBackwardArgs args;
  check_skeleton(kBackward, args, joint_parameters, parents, offsets, pre_rotations);
  const std::vector<int64_t> expected = concat(args.batch_shape, {args.joints, 8});
  const std::string text = "[..., J, 8] matching joint_parameters " +
      shape_string(joint_parameters);
  check_like(kBackward, "grad_skeleton_state", grad_skeleton_state, "joint_parameters", joint_parameters);
  check_shape(kBackward, "grad_skeleton_state", grad_skeleton_state, expected, text.c_str());
  check_like(kBackward, "skeleton_state", skeleton_state, "joint_parameters", joint_parameters);
  check_shape(kBackward, "skeleton_state", skeleton_state, expected, text.c_str());
  args.grad_skeleton_state = as_contiguous(grad_skeleton_state);
  args.skeleton_state = as_contiguous(skeleton_state);
  return args;
}

Tensor offsets_gradient(const Tensor& grad_joint_parameters, int64_t batch, int64_t joints) {
  Tensor flat = torch::stable::view(grad_joint_parameters, {batch, joints, 7});
  const std::vector<int64_t> batch_dim{0};
  return torch::stable::sum(torch::stable::narrow(flat, 2, 0, 3), batch_dim);
}

}  // namespace momentum_ops

// Parents is an index tensor: int32/int64, on the CPU (no host sync) or on the
// device of joint_parameters. pre_rotations gets no gradient.
STABLE_TORCH_LIBRARY_FRAGMENT(momentum, m) {
  m.def(
      "joint_parameters_to_skeleton_state(Tensor joint_parameters, "
      "Tensor parents, Tensor offsets, Tensor pre_rotations) -> Tensor");
  m.def(
      "joint_parameters_to_skeleton_state_backward(Tensor grad_skeleton_state, "
      "Tensor joint_parameters, Tensor parents, Tensor offsets, "
      "Tensor pre_rotations, Tensor skeleton_state) -> (Tensor, Tensor)");
}
