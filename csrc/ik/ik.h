// Inverse kinematics: argument checks and the index arrays the solver needs,
// shared by the CPU and CUDA kernels.
#pragma once

#include "../common/checks.h"
#include "ik_solver.h"

namespace momentum_ops {

// The skeleton, parameterisation and constraint layout of one call.
struct IkArgs {
  Tensor offsets, pre_rotations, transform_values, parameter_min, parameter_max, regularization_weight;
  Tensor position_offsets, orientation_offsets;
  std::vector<int32_t> index;  // packed int32 arrays at `offsets_of`
  IkIndexOffsets offsets_of{};
  int joints = 0, params = 0, active_count = 0, positions = 0, orientations = 0, fk_count = 0, levels = 0;
  int hessian_active = 0;  // active_count where the normal equations are formed, else 0
  IkScratchLayout layout() const { return IkScratchLayout(joints, params, active_count, hessian_active); }
  std::vector<int64_t> batch_shape;
  int64_t batch = 0;
  ScalarType dtype = ScalarType::Float;
};

// Per-problem tensors, contiguous, batch dims flattened in order.
struct IkProblemTensors {
  Tensor model_parameters, position_targets, position_weights, orientation_targets,
      orientation_weights, regularization_target;
};

struct IkOptions {
  double limit_weight = 0, tolerance = 0, damping = 0;
  int64_t max_iterations = 0;
};

// The C++ signatures of the ops (one place for both devices' entry points).
// The parameter transform comes as COO entries: transform_rows [nnz] (joint
// parameter, in [0, 7J)), transform_columns [nnz] (model parameter, in
// [0, P)), both int on the CPU or the call's device, and transform_values
// [nnz] like the model parameters.
#define MOMENTUM_IK_TRANSFORM_PARAMS Tensor transform_rows, Tensor transform_columns, Tensor transform_values
#define MOMENTUM_IK_TRANSFORM_ARGS transform_rows, transform_columns, transform_values
#define MOMENTUM_IK_SOLVE_PARAMS                                                                  \
  Tensor model_parameters, Tensor parents, Tensor offsets, Tensor pre_rotations,                 \
      MOMENTUM_IK_TRANSFORM_PARAMS, Tensor parameter_min, Tensor parameter_max,                  \
      Tensor active_parameters, Tensor position_joints, Tensor position_offsets,                 \
      Tensor position_targets, Tensor position_weights, Tensor orientation_joints,               \
      Tensor orientation_offsets, Tensor orientation_targets, Tensor orientation_weights,        \
      double limit_weight, Tensor regularization_target, Tensor regularization_weight,           \
      int64_t max_iterations, double tolerance, double damping
#define MOMENTUM_IK_SOLVE_ARGS                                                                    \
  model_parameters, parents, offsets, pre_rotations, MOMENTUM_IK_TRANSFORM_ARGS, parameter_min,  \
      parameter_max, active_parameters, position_joints, position_offsets, position_targets,     \
      position_weights, orientation_joints, orientation_offsets, orientation_targets,            \
      orientation_weights, limit_weight, regularization_target, regularization_weight,           \
      max_iterations, tolerance, damping
#define MOMENTUM_IK_BACKWARD_PARAMS                                                               \
  Tensor grad_model_parameters, Tensor solution, Tensor parents, Tensor offsets,                 \
      Tensor pre_rotations, MOMENTUM_IK_TRANSFORM_PARAMS, Tensor parameter_min,                  \
      Tensor parameter_max, Tensor active_parameters, Tensor position_joints,                    \
      Tensor position_offsets, Tensor position_targets, Tensor position_weights,                 \
      Tensor orientation_joints, Tensor orientation_offsets, Tensor orientation_targets,         \
      Tensor orientation_weights, double limit_weight, Tensor regularization_target,             \
      Tensor regularization_weight
#define MOMENTUM_IK_BACKWARD_ARGS                                                                 \
  grad_model_parameters, solution, parents, offsets, pre_rotations, MOMENTUM_IK_TRANSFORM_ARGS,  \
      parameter_min, parameter_max, active_parameters, position_joints, position_offsets,        \
      position_targets, position_weights, orientation_joints, orientation_offsets,               \
      orientation_targets, orientation_weights, limit_weight, regularization_target,             \
      regularization_weight
#define MOMENTUM_IK_RESIDUALS_PARAMS                                                              \
  Tensor model_parameters, Tensor parents, Tensor offsets, Tensor pre_rotations,                 \
      MOMENTUM_IK_TRANSFORM_PARAMS, Tensor position_joints, Tensor position_offsets,             \
      Tensor position_targets
#define MOMENTUM_IK_RESIDUALS_ARGS                                                                \
  model_parameters, parents, offsets, pre_rotations, MOMENTUM_IK_TRANSFORM_ARGS, position_joints, \
      position_offsets, position_targets

// A checked call with its outputs allocated (uninitialised).
struct IkSolveCall {
  IkProblemTensors problems;
  IkOptions options;
  IkArgs args;
  Tensor solution, iterations, energy;
};
IkSolveCall prepare_ik_solve(MOMENTUM_IK_SOLVE_PARAMS);

struct IkBackwardCall {
  IkProblemTensors problems;  // with the solution as the parameters
  IkOptions options;
  IkArgs args;
  Tensor grad_solution;
  Tensor grad_position_targets, grad_position_weights, grad_orientation_targets,
      grad_orientation_weights, grad_regularization_target;
};
IkBackwardCall prepare_ik_backward(MOMENTUM_IK_BACKWARD_PARAMS);

struct IkResidualsCall {
  IkProblemTensors problems;
  IkArgs args;
  Tensor residuals, jacobian;
};
IkResidualsCall prepare_residuals(MOMENTUM_IK_RESIDUALS_PARAMS);

// Checks everything of ik_solve / ik_solve_backward but the solution and its gradient.
IkArgs check_ik(
    const char* op,
    const char* theta_name,  // model_parameters, or solution for the backward
    IkProblemTensors& problems,
    const Tensor& parents,
    const Tensor& offsets,
    const Tensor& pre_rotations,
    const Tensor& transform_rows,
    const Tensor& transform_columns,
    const Tensor& transform_values,
    const Tensor& parameter_min,
    const Tensor& parameter_max,
    const Tensor& active_parameters,
    const Tensor& position_joints,
    const Tensor& position_offsets,
    const Tensor& orientation_joints,
    const Tensor& orientation_offsets,
    const Tensor& regularization_weight,
    const IkOptions& options);

// For position_residuals_and_jacobian: every parameter active, no orientations.
IkArgs check_residuals(
    const char* op,
    Tensor& model_parameters,
    Tensor& position_targets,
    const Tensor& parents,
    const Tensor& offsets,
    const Tensor& pre_rotations,
    const Tensor& transform_rows,
    const Tensor& transform_columns,
    const Tensor& transform_values,
    const Tensor& position_joints,
    const Tensor& position_offsets);

// The solver's view of the shared data; the caller points it at the index
// arrays with set_index (the host vector, or its copy on the device).
template <typename T>
const T* data_of(const Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.const_data_ptr()) : nullptr;
}

template <typename T>
IkModel<T> ik_model(const IkArgs& args, const IkOptions& options) {
  IkModel<T> m{};
  m.offsets = data_of<T>(args.offsets);
  m.pre_rotations = data_of<T>(args.pre_rotations);
  m.transform_values = data_of<T>(args.transform_values);
  m.parameter_min = data_of<T>(args.parameter_min);
  m.parameter_max = data_of<T>(args.parameter_max);
  m.regularization_weight = data_of<T>(args.regularization_weight);
  m.position_offsets = data_of<T>(args.position_offsets);
  m.orientation_offsets = data_of<T>(args.orientation_offsets);
  m.limit_weight = T(options.limit_weight);
  m.tolerance = T(options.tolerance);
  m.damping = T(options.damping);
  m.max_iterations = int(options.max_iterations);
  m.joints = args.joints;
  m.params = args.params;
  m.active_count = args.active_count;
  m.positions = args.positions;
  m.orientations = args.orientations;
  m.fk_count = args.fk_count;
  m.levels = args.levels;
  m.hessian_active = args.hessian_active;
  return m;
}

template <typename T>
IkBatch<T> ik_batch(const IkArgs& args, const IkProblemTensors& t) {
  return {data_of<T>(t.model_parameters), data_of<T>(t.position_targets), data_of<T>(t.position_weights),
          data_of<T>(t.orientation_targets), data_of<T>(t.orientation_weights),
          data_of<T>(t.regularization_target), args.params, args.positions, args.orientations};
}

}  // namespace momentum_ops
