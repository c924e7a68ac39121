// CPU kernels of inverse kinematics: one problem per task of torch's thread
// pool, each with its own scratch, running the solver of ik_solver.h in order.
#include "ik.h"

#include <torch/csrc/stable/library.h>

#include <tuple>

namespace momentum_ops {
namespace {

// Runs f(solver, b) for every problem b, each task with its own scratch.
template <typename T, typename F>
void for_each_problem(const IkArgs& args, const IkModel<T>& model, const IkBatch<T>& batch, F&& f) {
  const IkScratchLayout layout = args.layout();
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

// The model with its index arrays on the host.
template <typename T>
IkModel<T> host_model(const IkArgs& args, const IkOptions& options) {
  IkModel<T> model = ik_model<T>(args, options);
  model.set_index(args.index.data(), args.offsets_of);
  return model;
}

std::tuple<Tensor, Tensor, Tensor> ik_solve_cpu(MOMENTUM_IK_SOLVE_PARAMS) {
  IkSolveCall call = prepare_ik_solve(MOMENTUM_IK_SOLVE_ARGS);
  const IkArgs& args = call.args;
  dispatch_floating(args.dtype, [&](auto zero) {
    using T = decltype(zero);
    const IkModel<T> model = host_model<T>(args, call.options);
    T* out = static_cast<T*>(call.solution.mutable_data_ptr());
    int32_t* its = static_cast<int32_t*>(call.iterations.mutable_data_ptr());
    T* err = static_cast<T*>(call.energy.mutable_data_ptr());
    for_each_problem<T>(args, model, ik_batch<T>(args, call.problems), [&](auto& solver, int64_t b) {
      solver.solve(out + b * args.params, its + b, err + b);
    });
  });
  return {call.solution, call.iterations, call.energy};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> ik_solve_backward_cpu(MOMENTUM_IK_BACKWARD_PARAMS) {
  IkBackwardCall call = prepare_ik_backward(MOMENTUM_IK_BACKWARD_ARGS);
  const IkArgs& args = call.args;
  dispatch_floating(args.dtype, [&](auto zero) {
    using T = decltype(zero);
    const IkModel<T> model = host_model<T>(args, call.options);
    const T* g = data_of<T>(call.grad_solution);
    auto out = [](Tensor& x) { return static_cast<T*>(x.mutable_data_ptr()); };
    T *pt = out(call.grad_position_targets), *pw = out(call.grad_position_weights),
      *ot = out(call.grad_orientation_targets), *ow = out(call.grad_orientation_weights),
      *rt = out(call.grad_regularization_target);
    const IkBatch<T> batch = ik_batch<T>(args, call.problems);
    for_each_problem<T>(args, model, batch, [&](auto& solver, int64_t b) {
      const int64_t P = args.params, C = args.positions, Co = args.orientations;
      solver.implicit_backward(batch.problem(b).theta_init, g + b * P, pt + b * C * 3, pw + b * C,
                               ot + b * Co * 4, ow + b * Co, rt + b * P);
    });
  });
  return {call.grad_position_targets, call.grad_position_weights, call.grad_orientation_targets,
          call.grad_orientation_weights, call.grad_regularization_target};
}

std::tuple<Tensor, Tensor> residuals_cpu(MOMENTUM_IK_RESIDUALS_PARAMS) {
  IkResidualsCall call = prepare_residuals(MOMENTUM_IK_RESIDUALS_ARGS);
  const IkArgs& args = call.args;
  dispatch_floating(args.dtype, [&](auto zero) {
    using T = decltype(zero);
    const IkModel<T> model = host_model<T>(args, IkOptions{});
    T* r = static_cast<T*>(call.residuals.mutable_data_ptr());
    T* jac = static_cast<T*>(call.jacobian.mutable_data_ptr());
    const IkBatch<T> batch = ik_batch<T>(args, call.problems);
    for_each_problem<T>(args, model, batch, [&](auto& solver, int64_t b) {
      const int64_t rows = int64_t(args.positions) * 3;
      solver.position_residuals_and_jacobian(batch.problem(b).theta_init, r + b * rows, jac + b * rows * args.params);
    });
  });
  return {call.residuals, call.jacobian};
}

}  // namespace
}  // namespace momentum_ops

STABLE_TORCH_LIBRARY_IMPL(momentum, CPU, m) {
  m.impl("ik_solve", TORCH_BOX(&momentum_ops::ik_solve_cpu));
  m.impl("ik_solve_backward", TORCH_BOX(&momentum_ops::ik_solve_backward_cpu));
  m.impl("position_residuals_and_jacobian", TORCH_BOX(&momentum_ops::residuals_cpu));
}
