#include "ik.h"

#include "../common/math.h"

#include <torch/csrc/stable/library.h>

#include <algorithm>

namespace momentum_ops {

namespace {

// A per-problem tensor: [batch..., trailing...] with the given trailing shape.
void check_problem_tensor(const char* op, const char* name, Tensor& t, const char* like_name, const Tensor& like,
                          const std::vector<int64_t>& batch_shape, const std::vector<int64_t>& trailing,
                          const char* text) {
  check_like(op, name, t, like_name, like);
  check_shape(op, name, t, concat(batch_shape, trailing), text);
  t = as_contiguous(t);
}

std::vector<int64_t> joint_list(const char* op, const char* name, const Tensor& t, int64_t joints) {
  check_defined(op, name, t);
  MOMENTUM_CHECK(t.dim() == 1, op, ": ", name, " must have shape [C], got ", shape_string(t));
  std::vector<int64_t> values = integer_values(op, name, t);
  for (size_t i = 0; i < values.size(); ++i) {
    MOMENTUM_CHECK(values[i] >= 0 && values[i] < joints, op, ": ", name, "[", i, "] = ", values[i],
                   " is out of range; joints are in [0, ", joints, ")");
  }
  return values;
}

// Checks the skeleton (dtype and device like `like`, the model parameters)
// before anything else, so that every later size check compares against
// sizes already known to be right. Sets J.
std::vector<int32_t> check_model(const char* op, IkArgs& args, const char* like_name, const Tensor& like,
                                 const Tensor& parents, const Tensor& offsets, const Tensor& pre_rotations) {
  check_like(op, "offsets", offsets, like_name, like);
  MOMENTUM_CHECK(offsets.dim() == 2, op, ": offsets must have shape [J, 3], got ", shape_string(offsets));
  const int64_t J = offsets.size(0);
  check_shape(op, "offsets", offsets, {J, 3}, "[J, 3]");
  check_like(op, "pre_rotations", pre_rotations, like_name, like);
  check_shape(op, "pre_rotations", pre_rotations, {J, 4}, "[J, 4] (xyzw) with J from offsets");
  check_defined(op, "parents", parents);
  MOMENTUM_CHECK(parents.is_cpu() || parents.is_cuda() == like.is_cuda(), op, ": parents is on ",
                 device_string(parents), "; it must be on the CPU or on the device of ", like_name);
  std::vector<int32_t> codes = skeleton_topology(op, parents, J);
  args.joints = int(J);
  args.offsets = as_contiguous(offsets);
  args.pre_rotations = as_contiguous(pre_rotations);
  args.dtype = like.scalar_type();
  return codes;
}

// model_parameters: [..., P]; P is the number of model parameters of the call.
void check_model_parameters(const char* op, IkArgs& args, Tensor& theta, const char* name) {
  MOMENTUM_CHECK(theta.dim() >= 1, op, ": ", name, " must have shape [..., P], got ", shape_string(theta));
  MOMENTUM_CHECK(theta.size(-1) < (int64_t(1) << 30), op, ": ", name, " has ", theta.size(-1),
                 " parameters; at most 2^30 are supported");
  args.params = int(theta.size(-1));
  args.batch = check_batched_shape(op, name, theta, {args.params}, "[..., P]");
  args.batch_shape = batch_sizes(theta, 1);
  theta = as_contiguous(theta);
}

// The sparse parameter transform's entries, read on the host.
struct TransformEntries {
  std::vector<int64_t> rows, columns;
};

TransformEntries check_transform(const char* op, IkArgs& args, const Tensor& rows, const Tensor& columns,
                                 const Tensor& values, const char* like_name, const Tensor& like) {
  TransformEntries entries;
  for (auto [name, t] : {std::pair{"transform_rows", &rows}, std::pair{"transform_columns", &columns}}) {
    check_defined(op, name, *t);
    MOMENTUM_CHECK(t->dim() == 1, op, ": ", name, " must have shape [nnz], got ", shape_string(*t));
    MOMENTUM_CHECK(t->is_cpu() || t->is_cuda() == like.is_cuda(), op, ": ", name, " is on ", device_string(*t),
                   "; it must be on the CPU or on the device of ", like_name);
  }
  const int64_t nnz = rows.size(0);
  MOMENTUM_CHECK(nnz <= kIkMaxTransformEntries, op, ": the parameter transform has ", nnz,
                 " entries; at most ", kIkMaxTransformEntries, " are supported");
  check_shape(op, "transform_columns", columns, {nnz}, "[nnz] with nnz from transform_rows");
  check_like(op, "transform_values", values, like_name, like);
  check_shape(op, "transform_values", values, {nnz}, "[nnz] with nnz from transform_rows");
  entries.rows = integer_values(op, "transform_rows", rows);
  entries.columns = integer_values(op, "transform_columns", columns);
  const int64_t joint_rows = int64_t(7) * args.joints;
  for (int64_t e = 0; e < nnz; ++e) {
    MOMENTUM_CHECK(entries.rows[size_t(e)] >= 0 && entries.rows[size_t(e)] < joint_rows, op, ": transform_rows[",
                   e, "] = ", entries.rows[size_t(e)], " is out of range; joint parameter rows are in [0, ",
                   joint_rows, ") (7 per joint)");
    MOMENTUM_CHECK(entries.columns[size_t(e)] >= 0 && entries.columns[size_t(e)] < args.params, op,
                   ": transform_columns[", e, "] = ", entries.columns[size_t(e)],
                   " is out of range; model parameters are in [0, ", args.params, ") (P from ", like_name, ")");
  }
  args.transform_values = as_contiguous(values);
  return entries;
}

// The index arrays of the solver: topology, the joints FK visits (the
// constrained ones and their ancestors, by depth), the active parameters and
// the constraint joints.
void build_index(IkArgs& args, const std::vector<int32_t>& codes, const std::vector<int64_t>& active,
                 const std::vector<int64_t>& position_joints, const std::vector<int64_t>& orientation_joints,
                 const TransformEntries& transform) {
  const int64_t J = args.joints;
  std::vector<int> depth(size_t(J), 0);
  std::vector<char> needed(size_t(J), 0);
  for (int64_t j = 0; j < J; ++j) {
    const int p = topology_parent(codes[size_t(j)]);
    depth[size_t(j)] = p < 0 ? 0 : depth[size_t(p)] + 1;
  }
  for (const auto* list : {&position_joints, &orientation_joints}) {
    for (int64_t j : *list) {
      for (int64_t a = j; a >= 0 && !needed[size_t(a)]; a = topology_parent(codes[size_t(a)])) {
        needed[size_t(a)] = 1;
      }
    }
  }
  std::vector<int32_t> order;
  for (int64_t j = 0; j < J; ++j) {
    if (needed[size_t(j)]) order.push_back(int32_t(j));
  }
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return depth[size_t(a)] < depth[size_t(b)]; });
  std::vector<int32_t> level_start{0};
  for (size_t i = 1; i <= order.size(); ++i) {
    if (i == order.size() || depth[size_t(order[i])] != depth[size_t(order[i - 1])]) {
      level_start.push_back(int32_t(i));
    }
  }
  if (order.empty()) {
    level_start = {0};
  }
  auto append = [&](const auto& values) {
    const int64_t at = int64_t(args.index.size());
    for (auto v : values) args.index.push_back(int32_t(v));
    return at;
  };
  args.index.clear();
  args.offsets_of.topology = append(codes);
  args.offsets_of.fk_order = append(order);
  args.offsets_of.level_start = append(level_start);
  args.offsets_of.active = append(active);
  args.offsets_of.position_joints = append(position_joints);
  args.offsets_of.orientation_joints = append(orientation_joints);
  // The transform's entries grouped by row (for jp = T theta) and by active
  // parameter (for the Jacobian): a counting sort of the entry indices by
  // bucket (-1: left out), keeping their order within a bucket.
  const int64_t nnz = int64_t(transform.rows.size());
  auto group = [&](int64_t buckets, auto bucket_of, std::vector<int32_t>& start, std::vector<int32_t>& entries) {
    start.assign(size_t(buckets) + 1, 0);
    for (int64_t e = 0; e < nnz; ++e) {
      const int64_t k = bucket_of(e);
      if (k >= 0) ++start[size_t(k) + 1];
    }
    for (int64_t k = 0; k < buckets; ++k) start[size_t(k) + 1] += start[size_t(k)];
    entries.assign(size_t(start.back()), 0);
    std::vector<int32_t> next(start.begin(), start.end() - 1);
    for (int64_t e = 0; e < nnz; ++e) {
      const int64_t k = bucket_of(e);
      if (k >= 0) entries[size_t(next[size_t(k)]++)] = int32_t(e);
    }
  };
  std::vector<int32_t> row_start, row_entry, active_start, active_entry;
  group(7 * J, [&](int64_t e) { return transform.rows[size_t(e)]; }, row_start, row_entry);
  std::vector<int32_t> slot(size_t(args.params), -1);
  for (size_t k = 0; k < active.size(); ++k) slot[size_t(active[k])] = int32_t(k);
  group(int64_t(active.size()), [&](int64_t e) { return int64_t(slot[size_t(transform.columns[size_t(e)])]); },
        active_start, active_entry);
  std::vector<int32_t> row_column(row_entry.size()), active_row(active_entry.size());
  for (size_t i = 0; i < row_entry.size(); ++i) row_column[i] = int32_t(transform.columns[size_t(row_entry[i])]);
  for (size_t i = 0; i < active_entry.size(); ++i) active_row[i] = int32_t(transform.rows[size_t(active_entry[i])]);
  args.offsets_of.row_start = append(row_start);
  args.offsets_of.row_column = append(row_column);
  args.offsets_of.row_entry = append(row_entry);
  args.offsets_of.active_start = append(active_start);
  args.offsets_of.active_row = append(active_row);
  args.offsets_of.active_entry = append(active_entry);
  args.fk_count = int(order.size());
  args.levels = int(level_start.size()) - 1;
  args.active_count = int(active.size());
  args.positions = int(position_joints.size());
  args.orientations = int(orientation_joints.size());
}

// The solver's scratch per problem must fit in memory; say how much it asks for.
void check_scratch(const char* op, const IkArgs& args, int64_t active_count) {
  const IkScratchLayout layout(args.joints, args.params, int(active_count), args.hessian_active);
  const int64_t element = args.dtype == ScalarType::Double ? 8 : 4;
  const double bytes = double(layout.total) * double(element);
  MOMENTUM_CHECK(
      bytes <= double(kIkMaxScratchBytes), op, ": the solver's scratch memory would be ", bytes / double(1 << 20),
      " MiB per problem (", active_count, " active parameters, ", args.joints, " joints; the normal equations ",
      "grow with the square of the active parameters), over the limit of ", kIkMaxScratchBytes >> 20,
      " MiB; solve for fewer active parameters at a time");
}

}  // namespace

IkArgs check_ik(
    const char* op,
    const char* theta_name,
    IkProblemTensors& t,
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
    const IkOptions& options) {
  IkArgs args;
  check_floating(op, theta_name, t.model_parameters);
  const std::vector<int32_t> codes = check_model(op, args, theta_name, t.model_parameters, parents, offsets, pre_rotations);
  check_model_parameters(op, args, t.model_parameters, theta_name);
  const Tensor& theta = t.model_parameters;
  const TransformEntries transform =
      check_transform(op, args, transform_rows, transform_columns, transform_values, theta_name, theta);
  const int64_t P = args.params, J = args.joints;

  const std::vector<int64_t> pj = joint_list(op, "position_joints", position_joints, J);
  const std::vector<int64_t> oj = joint_list(op, "orientation_joints", orientation_joints, J);
  const int64_t C = int64_t(pj.size()), Co = int64_t(oj.size());
  check_like(op, "position_offsets", position_offsets, theta_name, theta);
  check_shape(op, "position_offsets", position_offsets, {C, 3}, "[C, 3] with C from position_joints");
  check_like(op, "orientation_offsets", orientation_offsets, theta_name, theta);
  check_shape(op, "orientation_offsets", orientation_offsets, {Co, 4}, "[Co, 4] (xyzw) with Co from orientation_joints");
  check_problem_tensor(op, "position_targets", t.position_targets, theta_name, theta, args.batch_shape, {C, 3}, "[..., C, 3]");
  check_problem_tensor(op, "position_weights", t.position_weights, theta_name, theta, args.batch_shape, {C}, "[..., C]");
  check_problem_tensor(op, "orientation_targets", t.orientation_targets, theta_name, theta, args.batch_shape, {Co, 4}, "[..., Co, 4]");
  check_problem_tensor(op, "orientation_weights", t.orientation_weights, theta_name, theta, args.batch_shape, {Co}, "[..., Co]");
  check_problem_tensor(op, "regularization_target", t.regularization_target, theta_name, theta, args.batch_shape, {P}, "[..., P]");
  for (auto [name, limit] : {std::pair{"parameter_min", &parameter_min}, std::pair{"parameter_max", &parameter_max},
                             std::pair{"regularization_weight", &regularization_weight}}) {
    check_like(op, name, *limit, theta_name, theta);
    check_shape(op, name, *limit, {P}, "[P]");
  }
  check_defined(op, "active_parameters", active_parameters);
  MOMENTUM_CHECK(active_parameters.scalar_type() == ScalarType::Bool, op,
                 ": active_parameters must be a bool tensor, got ", dtype_string(active_parameters.scalar_type()));
  check_shape(op, "active_parameters", active_parameters, {P}, "[P]");
  MOMENTUM_CHECK(active_parameters.is_cpu() || active_parameters.is_cuda(), op, ": active_parameters is on ",
                 device_string(active_parameters), "; it must hold data (cpu or cuda)");
  Tensor mask = active_parameters.is_cpu()
      ? as_contiguous(active_parameters)
      : as_contiguous(torch::stable::to(active_parameters, torch::stable::Device(torch::headeronly::DeviceType::CPU)));
  std::vector<int64_t> active;
  const bool* flags = static_cast<const bool*>(mask.const_data_ptr());
  for (int64_t p = 0; p < P; ++p) {
    if (flags[p]) active.push_back(p);
  }
  MOMENTUM_CHECK(options.max_iterations >= 0 && options.max_iterations <= kIkMaxIterations, op,
                 ": max_iterations must be in [0, ", kIkMaxIterations, "], got ", options.max_iterations);
  check_option(op, "tolerance", options.tolerance, 0.0, false);
  check_option(op, "damping", options.damping, 0.0, true);
  check_option(op, "limit_weight", options.limit_weight, 0.0, false);
  args.hessian_active = int(active.size());
  check_scratch(op, args, int64_t(active.size()));

  build_index(args, codes, active, pj, oj, transform);
  args.parameter_min = as_contiguous(parameter_min);
  args.parameter_max = as_contiguous(parameter_max);
  args.regularization_weight = as_contiguous(regularization_weight);
  args.position_offsets = as_contiguous(position_offsets);
  args.orientation_offsets = as_contiguous(orientation_offsets);
  return args;
}

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
    const Tensor& position_offsets) {
  IkArgs args;
  check_floating(op, "model_parameters", model_parameters);
  const std::vector<int32_t> codes =
      check_model(op, args, "model_parameters", model_parameters, parents, offsets, pre_rotations);
  check_model_parameters(op, args, model_parameters, "model_parameters");
  const TransformEntries transform = check_transform(op, args, transform_rows, transform_columns, transform_values,
                                                     "model_parameters", model_parameters);
  const std::vector<int64_t> pj = joint_list(op, "position_joints", position_joints, args.joints);
  const int64_t C = int64_t(pj.size());
  check_like(op, "position_offsets", position_offsets, "model_parameters", model_parameters);
  check_shape(op, "position_offsets", position_offsets, {C, 3}, "[C, 3] with C from position_joints");
  check_problem_tensor(op, "position_targets", position_targets, "model_parameters", model_parameters, args.batch_shape, {C, 3},
                       "[..., C, 3]");
  check_scratch(op, args, args.params);
  std::vector<int64_t> all(size_t(args.params));
  for (int64_t p = 0; p < args.params; ++p) all[size_t(p)] = p;
  build_index(args, codes, all, pj, {}, transform);
  args.position_offsets = as_contiguous(position_offsets);
  return args;
}

IkSolveCall prepare_ik_solve(MOMENTUM_IK_SOLVE_PARAMS) {
  IkSolveCall call;
  call.problems = {model_parameters, position_targets, position_weights, orientation_targets,
                   orientation_weights, regularization_target};
  call.options = {limit_weight, tolerance, damping, max_iterations};
  call.args = check_ik("ik_solve", "model_parameters", call.problems, parents, offsets, pre_rotations, MOMENTUM_IK_TRANSFORM_ARGS,
                       parameter_min, parameter_max, active_parameters, position_joints, position_offsets,
                       orientation_joints, orientation_offsets, regularization_weight, call.options);
  const Tensor& theta = call.problems.model_parameters;
  call.solution = torch::stable::new_empty(theta, theta.sizes());
  call.iterations = torch::stable::new_empty(theta, call.args.batch_shape, ScalarType::Int);
  call.energy = torch::stable::new_empty(theta, call.args.batch_shape);
  return call;
}

IkBackwardCall prepare_ik_backward(MOMENTUM_IK_BACKWARD_PARAMS) {
  constexpr const char* op = "ik_solve_backward";
  IkBackwardCall call;
  call.problems = {solution, position_targets, position_weights, orientation_targets, orientation_weights,
                   regularization_target};
  call.options = {limit_weight, 0.0, 1.0, 0};
  call.args = check_ik(op, "solution", call.problems, parents, offsets, pre_rotations, MOMENTUM_IK_TRANSFORM_ARGS, parameter_min,
                       parameter_max, active_parameters, position_joints, position_offsets, orientation_joints,
                       orientation_offsets, regularization_weight, call.options);
  const IkProblemTensors& t = call.problems;
  check_like(op, "grad_model_parameters", grad_model_parameters, "solution", t.model_parameters);
  check_shape(op, "grad_model_parameters", grad_model_parameters,
              concat(call.args.batch_shape, {call.args.params}), "[..., P] like the solution");
  call.grad_solution = as_contiguous(grad_model_parameters);
  auto like = [](const Tensor& x) { return torch::stable::new_empty(x, x.sizes()); };
  call.grad_position_targets = like(t.position_targets);
  call.grad_position_weights = like(t.position_weights);
  call.grad_orientation_targets = like(t.orientation_targets);
  call.grad_orientation_weights = like(t.orientation_weights);
  call.grad_regularization_target = like(t.regularization_target);
  return call;
}

IkResidualsCall prepare_residuals(MOMENTUM_IK_RESIDUALS_PARAMS) {
  IkResidualsCall call;
  call.args = check_residuals("position_residuals_and_jacobian", model_parameters, position_targets, parents,
                              offsets, pre_rotations, MOMENTUM_IK_TRANSFORM_ARGS, position_joints, position_offsets);
  call.problems = {model_parameters, position_targets, {}, {}, {}, {}};
  const IkArgs& a = call.args;
  call.residuals = torch::stable::new_empty(model_parameters, concat(a.batch_shape, {a.positions, 3}));
  call.jacobian = torch::stable::new_empty(
      model_parameters, concat(a.batch_shape, {int64_t(a.positions) * 3, a.params}));
  return call;
}

}  // namespace momentum_ops

// One call solves a batch of problems (all iterations inside); per problem it
// returns the parameters, the iterations taken and the final energy (NaN when
// the inputs give a non-finite energy; the parameters are then returned as given).
STABLE_TORCH_LIBRARY_FRAGMENT(momentum, m) {
  m.def(
      "ik_solve(Tensor model_parameters, Tensor parents, Tensor offsets, Tensor pre_rotations, "
      "Tensor transform_rows, Tensor transform_columns, Tensor transform_values, Tensor parameter_min, Tensor parameter_max, Tensor active_parameters, "
      "Tensor position_joints, Tensor position_offsets, Tensor position_targets, Tensor position_weights, "
      "Tensor orientation_joints, Tensor orientation_offsets, Tensor orientation_targets, "
      "Tensor orientation_weights, float limit_weight, Tensor regularization_target, "
      "Tensor regularization_weight, int max_iterations, float tolerance, float damping) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "ik_solve_backward(Tensor grad_model_parameters, Tensor solution, Tensor parents, Tensor offsets, "
      "Tensor pre_rotations, Tensor transform_rows, Tensor transform_columns, Tensor transform_values, "
      "Tensor parameter_min, Tensor parameter_max, "
      "Tensor active_parameters, Tensor position_joints, Tensor position_offsets, Tensor position_targets, "
      "Tensor position_weights, Tensor orientation_joints, Tensor orientation_offsets, "
      "Tensor orientation_targets, Tensor orientation_weights, float limit_weight, "
      "Tensor regularization_target, Tensor regularization_weight) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "position_residuals_and_jacobian(Tensor model_parameters, Tensor parents, Tensor offsets, "
      "Tensor pre_rotations, Tensor transform_rows, Tensor transform_columns, Tensor transform_values, "
      "Tensor position_joints, Tensor position_offsets, "
      "Tensor position_targets) -> (Tensor, Tensor)");
}
