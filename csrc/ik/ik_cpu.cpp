// CPU kernels of inverse kinematics: one problem per task of torch's thread
// pool, each with its own scratch, running the solver of ik_solver.h in order.
#include "ik.h"

#include <torch/csrc/stable/library.h>

#include <tuple>

namespace momentum_ops {
namespace {

constexpr const char* kSolve = "ik_solve";
constexpr const char* kBackward = "ik_solve_backward";
constexpr const char* kResiduals = "position_residuals_and_jacobian";

// Runs f(solver, b) for every problem b, each task with its own scratch.
template <typename T, typename F>
void for_each_problem(const IkArgs& args, const IkModel<T>& model, const IkBatch<T>& batch, F&& f) {
  const IkScratchLayout layout(args.joints, args.params, args.active_count);
  torch::stable::parallel_for(0, args.batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(size_t(layout.total));
    IkControl<T> control{};
    const SequentialExec exec;
    for (int64_t b = begin; b < end; ++b) {
      const IkProblem<T> problem = batch.problem(b);
      IkSolver<T, SequentialExec> solver(exec, model, problem, scratch.data(), &control);
      f(solver, b);
    }
  });
}

// The model with its index arrays and the transform's column index on the host.
template <typename T>
IkModel<T> host_model(const IkArgs& args, const IkOptions& options, std::vector<int32_t>& columns) {
  IkModel<T> model = ik_model<T>(args, options);
  model.set_index(args.index.data(), args.offsets_of);
  const int Pa = args.active_count;
  columns.assign(size_t(Pa) * (kIkColumnRows + 1), 0);
  model.column_rows = columns.data();
  model.column_count = columns.data() + size_t(Pa) * kIkColumnRows;
  for (int k = 0; k < Pa; ++k) {
    build_transform_column(model, k, columns.data(), columns.data() + size_t(Pa) * kIkColumnRows + k);
  }
  return model;
}

template <typename F>
void dispatch(ScalarType dtype, F&& f) {
  if (dtype == ScalarType::Float) {
    f(float(0));
  } else {
    f(double(0));
  }
}

std::tuple<Tensor, Tensor, Tensor> ik_solve_cpu(
    Tensor model_parameters, Tensor parents, Tensor offsets, Tensor pre_rotations, Tensor parameter_transform,
    Tensor parameter_min, Tensor parameter_max, Tensor active_parameters, Tensor position_joints,
    Tensor position_offsets, Tensor position_targets, Tensor position_weights, Tensor orientation_joints,
    Tensor orientation_offsets, Tensor orientation_targets, Tensor orientation_weights, double limit_weight,
    Tensor regularization_target, Tensor regularization_weight, int64_t max_iterations, double tolerance,
    double damping) {
  IkProblemTensors t{model_parameters, position_targets, position_weights, orientation_targets,
                     orientation_weights, regularization_target};
  const IkOptions options{limit_weight, tolerance, damping, max_iterations};
  const IkArgs args = check_ik(kSolve, t, parents, offsets, pre_rotations, parameter_transform, parameter_min,
                               parameter_max, active_parameters, position_joints, position_offsets,
                               orientation_joints, orientation_offsets, regularization_weight, options);
  Tensor solution = torch::stable::new_empty(t.model_parameters, t.model_parameters.sizes());
  Tensor iterations = torch::stable::new_empty(t.model_parameters, args.batch_shape, ScalarType::Int);
  Tensor energy = torch::stable::new_empty(t.model_parameters, args.batch_shape);
  dispatch(args.dtype, [&](auto zero) {
    using T = decltype(zero);
    std::vector<int32_t> columns;
    const IkModel<T> model = host_model<T>(args, options, columns);
    T* out = static_cast<T*>(solution.mutable_data_ptr());
    int32_t* its = static_cast<int32_t*>(iterations.mutable_data_ptr());
    T* err = static_cast<T*>(energy.mutable_data_ptr());
    for_each_problem<T>(args, model, ik_batch<T>(args, t), [&](auto& solver, int64_t b) {
      solver.solve(out + b * args.params, its + b, err + b);
    });
  });
  return {solution, iterations, energy};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> ik_solve_backward_cpu(
    Tensor grad_model_parameters, Tensor solution, Tensor parents, Tensor offsets, Tensor pre_rotations,
    Tensor parameter_transform, Tensor parameter_min, Tensor parameter_max, Tensor active_parameters,
    Tensor position_joints, Tensor position_offsets, Tensor position_targets, Tensor position_weights,
    Tensor orientation_joints, Tensor orientation_offsets, Tensor orientation_targets, Tensor orientation_weights,
    double limit_weight, Tensor regularization_target, Tensor regularization_weight) {
  IkProblemTensors t{solution, position_targets, position_weights, orientation_targets, orientation_weights,
                     regularization_target};
  const IkOptions options{limit_weight, 0.0, 1.0, 0};
  const IkArgs args = check_ik(kBackward, t, parents, offsets, pre_rotations, parameter_transform, parameter_min,
                               parameter_max, active_parameters, position_joints, position_offsets,
                               orientation_joints, orientation_offsets, regularization_weight, options);
  check_like(kBackward, "grad_model_parameters", grad_model_parameters, "solution", t.model_parameters);
  check_shape(kBackward, "grad_model_parameters", grad_model_parameters, concat(args.batch_shape, {args.params}),
              "[..., P] like the solution");
  const Tensor grad = as_contiguous(grad_model_parameters);
  Tensor g_pt = torch::stable::new_empty(t.position_targets, t.position_targets.sizes());
  Tensor g_pw = torch::stable::new_empty(t.position_weights, t.position_weights.sizes());
  Tensor g_ot = torch::stable::new_empty(t.orientation_targets, t.orientation_targets.sizes());
  Tensor g_ow = torch::stable::new_empty(t.orientation_weights, t.orientation_weights.sizes());
  Tensor g_rt = torch::stable::new_empty(t.regularization_target, t.regularization_target.sizes());
  dispatch(args.dtype, [&](auto zero) {
    using T = decltype(zero);
    std::vector<int32_t> columns;
    const IkModel<T> model = host_model<T>(args, options, columns);
    const T* g = data_of<T>(grad);
    auto out = [](Tensor& x) { return static_cast<T*>(x.mutable_data_ptr()); };
    T *pt = out(g_pt), *pw = out(g_pw), *ot = out(g_ot), *ow = out(g_ow), *rt = out(g_rt);
    const IkBatch<T> batch = ik_batch<T>(args, t);
    for_each_problem<T>(args, model, batch, [&](auto& solver, int64_t b) {
      const int64_t P = args.params, C = args.positions, Co = args.orientations;
      solver.implicit_backward(batch.problem(b).theta_init, g + b * P, pt + b * C * 3, pw + b * C,
                               ot + b * Co * 4, ow + b * Co, rt + b * P);
    });
  });
  return {g_pt, g_pw, g_ot, g_ow, g_rt};
}

std::tuple<Tensor, Tensor> residuals_cpu(
    Tensor model_parameters, Tensor parents, Tensor offsets, Tensor pre_rotations, Tensor parameter_transform,
    Tensor position_joints, Tensor position_offsets, Tensor position_targets) {
  const IkArgs args = check_residuals(kResiduals, model_parameters, position_targets, parents, offsets,
                                      pre_rotations, parameter_transform, position_joints, position_offsets);
  Tensor residuals = torch::stable::new_empty(model_parameters, concat(args.batch_shape, {args.positions, 3}));
  Tensor jacobian = torch::stable::new_empty(
      model_parameters, concat(args.batch_shape, {int64_t(args.positions) * 3, args.params}));
  IkProblemTensors t{model_parameters, position_targets, {}, {}, {}, {}};
  dispatch(args.dtype, [&](auto zero) {
    using T = decltype(zero);
    std::vector<int32_t> columns;
    const IkModel<T> model = host_model<T>(args, IkOptions{}, columns);
    T* r = static_cast<T*>(residuals.mutable_data_ptr());
    T* jac = static_cast<T*>(jacobian.mutable_data_ptr());
    const IkBatch<T> batch = ik_batch<T>(args, t);
    for_each_problem<T>(args, model, batch, [&](auto& solver, int64_t b) {
      const int64_t rows = int64_t(args.positions) * 3;
      solver.position_residuals_and_jacobian(batch.problem(b).theta_init, r + b * rows, jac + b * rows * args.params);
    });
  });
  return {residuals, jacobian};
}

}  // namespace
}  // namespace momentum_ops

STABLE_TORCH_LIBRARY_IMPL(momentum, CPU, m) {
  m.impl("ik_solve", TORCH_BOX(&momentum_ops::ik_solve_cpu));
  m.impl("ik_solve_backward", TORCH_BOX(&momentum_ops::ik_solve_backward_cpu));
  m.impl("position_residuals_and_jacobian", TORCH_BOX(&momentum_ops::residuals_cpu));
}
