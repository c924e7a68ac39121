// The batched inverse-kinematics solver, written once for the CPU and the GPU.
//
// One IkSolver instance solves one problem. Its loops go through an execution
// policy `Exec`: on the CPU (SequentialExec) they are plain loops; on the GPU
// (BlockExec, ik_cuda.cu) the threads of one block share them and `sync()` is a
// barrier. Scalars every thread needs (energy, damping, flags) live in an
// IkControl the policy places in shared memory.
//
// The problem (docs/conventions.md, Inverse kinematics): minimise over the active
// model parameters theta
//   E = sum_c w_c |p_c - target_c|^2 + sum_o w_o |R_o - R_target_o|_F^2
//     + w_limit sum_p limit_p(theta_p)^2 + sum_p w_reg_p (theta_p - ref_p)^2
// by Levenberg-Marquardt on the Gauss-Newton normal equations
//   (H + lambda D) step = -g,  H = J^T W J,  g = J^T W r,
// D = diag(H) floored at 1e-9 of its largest entry, solved by a Cholesky
// factorisation of the packed lower triangle. The step is tried at full
// length, then halved up to kIkLineSearch times (on long chains the
// Gauss-Newton direction is good long before its length is); the first that
// lowers E is taken. A full step divides lambda by 10; if no length lowers E,
// lambda *= 10 and the system is solved again. A problem stops on a full step
// whose relative decrease is <= tolerance or that moves the parameters by
// less than sqrt(tolerance) relative, once the decrease the Gauss-Newton
// model predicts (-g.step) and the one taken are both within E's rounding
// (4 eps sqrt(E * scale), see solve(); what ends float32 solves), on
// max_iterations, or when no retry lowers E (tolerance 0: run to rounding
// level); a problem whose energy is not finite stops at once.
#pragma once

#include "../common/math.h"

namespace momentum_ops {

constexpr int kIkMaxAttempts = 10;
constexpr int kIkLineSearch = 8;
// The largest iteration count an op accepts (the solver counts in int).
constexpr int64_t kIkMaxIterations = (int64_t(1) << 31) - 1;
// Scratch memory one problem may ask for (the packed normal equations, twice,
// dominate: 4 * Pa^2 bytes in float32).
constexpr int64_t kIkMaxScratchBytes = int64_t(1) << 30;
// Entries of the sparse parameter transform one call may have (the index
// arrays count in int32).
constexpr int64_t kIkMaxTransformEntries = int64_t(1) << 28;

// Where each index array starts in the packed int32 index block.
struct IkIndexOffsets {
  int64_t topology, fk_order, level_start, active, position_joints, orientation_joints;
  int64_t row_start, row_column, row_entry, active_start, active_row, active_entry;
};

// Everything that is the same for every problem of a call.
//
// The parameter transform is sparse: entry e maps model parameter column[e]
// to joint parameter row[e] with coefficient transform_values[e] (duplicates
// add up). The index block holds it twice, by row for jp = transform @ theta
// (row_start, row_column, row_entry) and by active parameter for the
// Jacobian (active_start, active_row, active_entry); *_entry index
// transform_values, which stay where the caller's tensor is.
template <typename T>
struct IkModel {
  const T* offsets;  // [J, 3]
  const T* pre_rotations;  // [J, 4]
  const T* transform_values;  // [nnz]
  const T* parameter_min;  // [P]
  const T* parameter_max;  // [P]
  const T* regularization_weight;  // [P]
  const T* position_offsets;  // [C, 3]
  const T* orientation_offsets;  // [Co, 4]
  // Index arrays, all int32, packed one after the other (see IkIndexOffsets).
  const int32_t* topology;  // [J] math.h codes
  const int32_t* fk_order;  // [fk_count] joints to evaluate, by depth
  const int32_t* level_start;  // [levels + 1] into fk_order
  const int32_t* active;  // [Pa] the free model parameters
  const int32_t* position_joints;  // [C]
  const int32_t* orientation_joints;  // [Co]
  const int32_t* row_start;  // [7J + 1] into row_column / row_entry
  const int32_t* row_column;  // model parameter of each entry, by row
  const int32_t* row_entry;
  const int32_t* active_start;  // [Pa + 1] into active_row / active_entry
  const int32_t* active_row;  // joint parameter row of each entry, by active parameter
  const int32_t* active_entry;
  T limit_weight;
  T tolerance;
  T damping;
  int max_iterations;
  int joints, params, active_count, positions, orientations, fk_count, levels;
  int hessian_active;  // active_count, or 0 where no normal equations are formed

  MOMENTUM_HD void set_index(const int32_t* base, const IkIndexOffsets& o) {
    topology = base + o.topology;
    fk_order = base + o.fk_order;
    level_start = base + o.level_start;
    active = base + o.active;
    position_joints = base + o.position_joints;
    orientation_joints = base + o.orientation_joints;
    row_start = base + o.row_start;
    row_column = base + o.row_column;
    row_entry = base + o.row_entry;
    active_start = base + o.active_start;
    active_row = base + o.active_row;
    active_entry = base + o.active_entry;
  }
};

// One problem's inputs.
template <typename T>
struct IkProblem {
  const T* theta_init;  // [P]
  const T* position_targets;  // [C, 3]
  const T* position_weights;  // [C]
  const T* orientation_targets;  // [Co, 4]
  const T* orientation_weights;  // [Co]
  const T* regularization_target;  // [P]
};

// The per-problem tensors of a batch (contiguous, batch flattened).
template <typename T>
struct IkBatch {
  const T* theta;
  const T* position_targets;
  const T* position_weights;
  const T* orientation_targets;
  const T* orientation_weights;
  const T* regularization_target;
  int params, positions, orientations;

  MOMENTUM_HD IkProblem<T> problem(int64_t b) const {
    auto at = [](const T* base, int64_t offset) { return base ? base + offset : base; };
    return {at(theta, b * params), at(position_targets, b * positions * 3), at(position_weights, b * positions),
            at(orientation_targets, b * orientations * 4), at(orientation_weights, b * orientations),
            at(regularization_target, b * params)};
  }
};

// Scalars shared by the threads working on one problem.
template <typename T>
struct IkControl {
  T energy, trial_energy, lambda, diag_max, noise_floor, noise_scale, predicted;
  int touched_count, chain_length, failed, done, iterations;
};

// Scratch of one problem, in elements of T (ints are stored in T-sized slots
// so one allocation serves both).
struct IkScratchLayout {
  int64_t theta, trial, jp, states, pre_rotations, hessian, saved_hessian, gradient, step, columns, motions,
      touched, chain, chain_position, total;

  // `hessian_active`: the active parameters of the normal equations (0 for
  // the residual op, which forms none).
  MOMENTUM_HD IkScratchLayout(int joints, int params, int active, int hessian_active) {
    const int64_t packed = int64_t(hessian_active) * (hessian_active + 1) / 2;
    int64_t at = 0;
    auto take = [&](int64_t n) {
      const int64_t here = at;
      at += (n + 1) / 2 * 2;  // keep 16-byte alignment for doubles
      return here;
    };
    theta = take(params);
    trial = take(params);
    jp = take(int64_t(7) * joints);
    states = take(int64_t(8) * joints);
    pre_rotations = take(int64_t(4) * joints);  // unit quaternions (math.h: quat_normalize)
    hessian = take(packed);
    saved_hessian = take(packed);
    gradient = take(active);
    step = take(active);
    columns = take(int64_t(9) * active);  // one constraint's rows, column-major by parameter
    motions = take(int64_t(30) * joints);  // per chain joint: 7 parameter motions and 3 rotation axes (3 each)
    touched = take(active);
    chain = take(joints);
    chain_position = take(joints);
    total = at;
  }
};

MOMENTUM_HD int64_t packed_index(int64_t i, int64_t j) {  // i >= j
  return i * (i + 1) / 2 + j;
}

// (i, j), i >= j, of the e-th entry of a packed lower triangle.
MOMENTUM_HD void packed_entry(int64_t e, int64_t* i, int64_t* j) {
  int64_t r = int64_t((sqrt(8.0 * double(e) + 1.0) - 1.0) / 2.0);
  while (r * (r + 1) / 2 > e) --r;
  while ((r + 1) * (r + 2) / 2 <= e) ++r;
  *i = r;
  *j = e - r * (r + 1) / 2;
}

template <typename T, typename Exec>
class IkSolver {
 public:
  // `fast_hessian`, when given, holds the factorisation's working copy of H
  // (the GPU passes shared memory); otherwise it lives in the scratch.
  MOMENTUM_HD IkSolver(const Exec& exec, const IkModel<T>& model, const IkProblem<T>& problem,
                       T* scratch, IkControl<T>* control, T* fast_hessian = nullptr)
      : x_(exec), m_(model), pr_(problem), c_(control), layout_(model.joints, model.params, model.active_count, model.hessian_active) {
    theta_ = scratch + layout_.theta;
    trial_ = scratch + layout_.trial;
    jp_ = scratch + layout_.jp;
    states_ = scratch + layout_.states;
    pre_ = scratch + layout_.pre_rotations;
    hessian_ = fast_hessian != nullptr ? fast_hessian : scratch + layout_.hessian;
    saved_ = scratch + layout_.saved_hessian;
    gradient_ = scratch + layout_.gradient;
    step_ = scratch + layout_.step;
    columns_ = scratch + layout_.columns;
    motions_ = scratch + layout_.motions;
    touched_ = reinterpret_cast<int*>(scratch + layout_.touched);
    chain_ = reinterpret_cast<int*>(scratch + layout_.chain);
    chain_position_ = reinterpret_cast<int*>(scratch + layout_.chain_position);
    x_.for_each(m_.joints, [&](int j) {
      chain_position_[j] = -1;
      for (int c = 0; c < 4; ++c) pre_[4 * j + c] = m_.pre_rotations[4 * j + c];
      normalize_quaternion_at(pre_ + 4 * j);
    });
    x_.sync();
  }

  // ------------------------------------------------------------ the solve
  // Writes the solution to theta_out; returns the final energy (NaN when the
  // initial energy is not finite, theta_out then = theta_init).
  MOMENTUM_HD void solve(T* theta_out, int32_t* iterations_out, T* energy_out) {
    const int P = m_.params;
    x_.for_each(P, [&](int p) { theta_[p] = pr_.theta_init[p]; });
    x_.sync();
    const T e0 = energy(theta_);
    const T scale = noise_scale();
    if (x_.leader()) {
      const T eps = sizeof(T) == 4 ? T(1.2e-7) : T(2.3e-16);
      c_->energy = e0;
      c_->lambda = m_.damping;
      c_->iterations = 0;
      c_->noise_scale = scale;
      c_->noise_floor = T(16) * eps * eps * scale;
      const T floor = c_->noise_floor;
      c_->done = !is_finite(e0) || e0 <= floor || m_.active_count == 0;
    }
    x_.sync();
    for (int it = 0; it < m_.max_iterations && !c_->done; ++it) {
      normal_equations(theta_);
      x_.for_each(packed_size(), [&](int64_t e) { saved_[e] = hessian_[e]; });
      x_.sync();
      bool accepted = false;
      bool full_step = false;
      if (x_.leader()) {
        c_->predicted = T(INFINITY);
      }
      x_.sync();
      for (int attempt = 0; attempt < kIkMaxAttempts && !accepted; ++attempt) {
        if (attempt > 0) {
          x_.for_each(packed_size(), [&](int64_t e) { hessian_[e] = saved_[e]; });
          x_.sync();
        }
        if (damped_solve(c_->lambda)) {
          if (attempt == 0) {
            // The decrease the Gauss-Newton model predicts for this step, -g.step.
            T partial = 0;
            x_.for_each(m_.active_count, [&](int k) { partial -= gradient_[k] * step_[k]; });
            const T predicted = x_.sum(partial);
            if (x_.leader()) {
              c_->predicted = predicted;
            }
            x_.sync();
          }
          T length = T(1);
          for (int halving = 0; halving < kIkLineSearch && !accepted; ++halving) {
            x_.for_each(P, [&](int p) { trial_[p] = theta_[p]; });
            x_.sync();
            x_.for_each(m_.active_count, [&](int k) { trial_[m_.active[k]] += length * step_[k]; });
            x_.sync();
            const T e = energy(trial_);
            if (x_.leader()) {
              c_->trial_energy = e;
            }
            x_.sync();
            accepted = is_finite(c_->trial_energy) && c_->trial_energy < c_->energy;
            full_step = accepted && halving == 0;
            length *= T(0.5);
          }
        }
        x_.sync();
        if (x_.leader()) {
          c_->lambda = !accepted ? c_->lambda * T(10)
                                 : full_step ? max_(c_->lambda / T(10), T(1e-12)) : c_->lambda;
        }
        x_.sync();
      }
      // Size of the step taken relative to the parameters, for the stopping test.
      T partial = 0;
      x_.for_each(m_.active_count, [&](int k) {
        const int p = m_.active[k];
        const T d = trial_[p] - theta_[p];
        const T scale = T(1) + (theta_[p] < T(0) ? -theta_[p] : theta_[p]);
        partial = max_(partial, (d < T(0) ? -d : d) / scale);
      });
      const T relative_step = x_.max(partial);
      if (accepted) {
        x_.for_each(P, [&](int p) { theta_[p] = trial_[p]; });
      }
      x_.sync();
      if (x_.leader()) {
        c_->iterations = it + 1;
        const T previous = c_->energy;
        if (accepted) {
          c_->energy = c_->trial_energy;
        }
        // Also stop once a full step moves the parameters by less than
        // sqrt(tolerance) relative: near the solution E's error is the square
        // of the parameters', so the next step would gain < tolerance.
        const T eps = sizeof(T) == 4 ? T(1.2e-7) : T(2.3e-16);
        const T step_tolerance = max_(sqrt(m_.tolerance), eps);
        // Stop once the model predicts no decrease above E's rounding: each
        // residual r is off by ~eps (|p| + |target|), so E by about
        // 2 eps sum w |r| (|p| + |target|) <= 4 eps sqrt(E * scale) (Cauchy-Schwarz).
        // (The predicted decrease, not the one taken: a line search can take
        // a short step with a small decrease far from the solution.)
        const T decrease_noise = T(4) * eps * sqrt(previous * c_->noise_scale);
        c_->done = !accepted || c_->energy <= c_->noise_floor ||
            (c_->predicted <= decrease_noise && previous - c_->energy <= decrease_noise) ||
            (full_step && (previous - c_->energy <= m_.tolerance * previous || relative_step <= step_tolerance));
      }
      x_.sync();
    }
    const bool failed = !is_finite(c_->energy);
    x_.for_each(P, [&](int p) { theta_out[p] = failed ? pr_.theta_init[p] : theta_[p]; });
    if (x_.leader()) {
      *iterations_out = c_->iterations;
      *energy_out = failed ? T(NAN) : c_->energy;
    }
    x_.sync();
  }

  // ------------------------------------------------ implicit-function backward
  // u = (H + mu D)^-1 v at theta (the solution; H the exact Hessian, D = |diag(H)|), then the gradients of the
  // loss with respect to the targets, the weights and the reference:
  //   dL/dtarget_c = w_c J_c u,  dL/dw_c = -(J_c u) . r_c,  dL/dref = w_reg * u
  // (and the same for orientations through R(q_target)). mu starts tiny and
  // grows until the factorisation succeeds (a singular H gets damped).
  MOMENTUM_HD void implicit_backward(
      const T* theta, const T* grad_theta, T* grad_position_targets, T* grad_position_weights,
      T* grad_orientation_targets, T* grad_orientation_weights, T* grad_regularization_target) {
    const int P = m_.params;
    x_.for_each(P, [&](int p) { theta_[p] = theta[p]; });
    x_.sync();
    energy(theta_);
    normal_equations(theta_);
    // The exact Hessian: Gauss-Newton plus the residuals times their second derivatives.
    for (int pass = 0; pass < 2; ++pass) {
      const bool orientation = pass == 1;
      const int count = orientation ? m_.orientations : m_.positions;
      for (int c = 0; c < count; ++c) {
        T residual[9];
        constraint_columns(c, orientation, residual);
        add_second_order(c, orientation, residual, orientation ? pr_.orientation_weights[c] : pr_.position_weights[c]);
      }
    }
    x_.for_each(packed_size(), [&](int64_t e) { saved_[e] = hessian_[e]; });
    x_.sync();
    T mu = sizeof(T) == 4 ? T(1e-6) : T(1e-10);
    bool solved = false;
    for (int attempt = 0; attempt < 12 && !solved; ++attempt) {
      if (attempt > 0) {
        x_.for_each(packed_size(), [&](int64_t e) { hessian_[e] = saved_[e]; });
        x_.sync();
      }
      // The right-hand side goes in `gradient_` with the sign damped_solve expects.
      x_.for_each(m_.active_count, [&](int k) { gradient_[k] = -grad_theta[m_.active[k]]; });
      x_.sync();
      solved = damped_solve(mu);
      mu *= T(100);
    }
    if (!solved) {
      // Every damped factorisation failed (a non-finite H): the gradient is
      // undefined, so it comes out NaN rather than from a stale step.
      x_.for_each(m_.active_count, [&](int k) { step_[k] = T(NAN); });
      x_.sync();
    }
    const T* u = step_;  // = (H + mu D)^-1 v on the active parameters
    x_.for_each(P, [&](int p) { grad_regularization_target[p] = T(0); });
    x_.sync();
    x_.for_each(m_.active_count, [&](int k) {
      grad_regularization_target[m_.active[k]] = m_.regularization_weight[m_.active[k]] * u[k];
    });
    x_.sync();
    for (int c = 0; c < m_.positions; ++c) {
      T residual[9];
      const int rows = constraint_columns(c, false, residual);
      const T w = pr_.position_weights[c];
      T ju[3];
      for (int r = 0; r < rows; ++r) {
        ju[r] = project(r, rows, u);
      }
      if (x_.leader()) {
        T dot_r = 0;
        for (int r = 0; r < 3; ++r) {
          grad_position_targets[3 * c + r] = w * ju[r];
          dot_r += ju[r] * residual[r];
        }
        grad_position_weights[c] = -dot_r;
      }
      x_.sync();
    }
    for (int o = 0; o < m_.orientations; ++o) {
      T residual[9];
      const int rows = constraint_columns(o, true, residual);
      const T w = pr_.orientation_weights[o];
      T ju[9];
      for (int r = 0; r < rows; ++r) {
        ju[r] = project(r, rows, u);
      }
      if (x_.leader()) {
        T dot_r = 0;
        for (int r = 0; r < 9; ++r) {
          dot_r += ju[r] * residual[r];
        }
        grad_orientation_weights[o] = -dot_r;
        // residual = R(q_o) - R(q_target): d/dq_target of -(R(q_target) . w ju).
        T g_rows[9];
        for (int r = 0; r < 9; ++r) {
          g_rows[r] = w * ju[r];
        }
        T grad_q[4];
        rows_backward(load_quat(pr_.orientation_targets + 4 * o), g_rows, grad_q);
        for (int i = 0; i < 4; ++i) {
          grad_orientation_targets[4 * o + i] = grad_q[i];
        }
      }
      x_.sync();
    }
  }

  // ------------------------------------------------ residuals and Jacobian
  // Position constraint residuals [C, 3] and the Jacobian [C * 3, P] with
  // respect to every model parameter (the model's active list must be all P).
  MOMENTUM_HD void position_residuals_and_jacobian(const T* theta, T* residuals, T* jacobian) {
    const int P = m_.params;
    x_.for_each(P, [&](int p) { theta_[p] = theta[p]; });
    x_.sync();
    evaluate_skeleton(theta_);
    for (int c = 0; c < m_.positions; ++c) {
      T residual[9];
      constraint_columns(c, false, residual);
      x_.for_each(P * 3, [&](int e) {
        const int p = e / 3, r = e % 3;
        jacobian[int64_t(3 * c + r) * P + p] = columns_[3 * p + r];
      });
      if (x_.leader()) {
        for (int r = 0; r < 3; ++r) {
          residuals[3 * c + r] = residual[r];
        }
      }
      x_.sync();
    }
  }

 private:
  MOMENTUM_HD int64_t packed_size() const {
    return int64_t(m_.active_count) * (m_.active_count + 1) / 2;
  }
  MOMENTUM_HD static bool is_finite(T v) {
    return v == v && v - v == T(0);
  }
  MOMENTUM_HD static T max_(T a, T b) {
    return a > b ? a : b;
  }

  // jp = transform @ theta for the joints FK visits, then FK over them by level.
  MOMENTUM_HD void evaluate_skeleton(const T* theta) {
    x_.for_each(m_.fk_count * 7, [&](int e) {
      const int j = m_.fk_order[e / 7];
      const int64_t row = int64_t(7) * j + e % 7;
      T value = 0;
      for (int i = m_.row_start[row]; i < m_.row_start[row + 1]; ++i) {
        value += m_.transform_values[m_.row_entry[i]] * theta[m_.row_column[i]];
      }
      jp_[row] = value;
    });
    x_.sync();
    for (int level = 0; level < m_.levels; ++level) {
      const int first = m_.level_start[level];
      x_.for_each(m_.level_start[level + 1] - first, [&](int e) {
        const int j = m_.fk_order[first + e];
        Transform<T> global = local_transform(
            jp_ + 7 * j, load_vec3(m_.offsets + 3 * j), load_quat(pre_ + 4 * j));
        const int parent = topology_parent(m_.topology[j]);
        if (parent >= 0) {
          global = compose(load_state(states_ + 8 * parent), global);
        }
        store_state(global, states_ + 8 * j);
      });
      x_.sync();
    }
  }

  MOMENTUM_HD Vec3<T> position_of(int c) const {
    const int j = m_.position_joints[c];
    return transform_point(load_state(states_ + 8 * j), load_vec3(m_.position_offsets + 3 * c));
  }

  MOMENTUM_HD void orientation_rows(int o, T rows[9]) const {
    const int j = m_.orientation_joints[o];
    const Quat<T> q = quat_multiply(load_quat(states_ + 8 * j + 3), load_quat(m_.orientation_offsets + 4 * o));
    quat_to_rows(q, rows);
  }

  // E(theta); leaves the skeleton evaluated at theta.
  MOMENTUM_HD T energy(const T* theta) {
    evaluate_skeleton(theta);
    T partial = 0;
    x_.for_each(m_.positions, [&](int c) {
      const Vec3<T> d = position_of(c) - load_vec3(pr_.position_targets + 3 * c);
      partial += pr_.position_weights[c] * dot(d, d);
    });
    x_.for_each(m_.orientations, [&](int o) {
      T rows[9], target[9];
      orientation_rows(o, rows);
      quat_to_rows(load_quat(pr_.orientation_targets + 4 * o), target);
      T sum = 0;
      for (int e = 0; e < 9; ++e) {
        sum += (rows[e] - target[e]) * (rows[e] - target[e]);
      }
      partial += pr_.orientation_weights[o] * sum;
    });
    x_.for_each(m_.params, [&](int p) {
      const T v = theta[p];
      const T limit = limit_residual(p, v);
      const T d = v - pr_.regularization_target[p];
      partial += m_.limit_weight * limit * limit + m_.regularization_weight[p] * d * d;
    });
    return x_.sum(partial);
  }

  // The scale of E's rounding: sum_c w_c 3 (1 + |target_c|)^2 (and the same
  // for orientations and the regularisation). Every residual off by a few
  // ulps of its size leaves E = 16 eps^2 scale (the noise floor): below it a
  // "decrease" is noise, so the solve stops there instead of taking steps
  // that only reshuffle rounding errors.
  MOMENTUM_HD T noise_scale() {
    T partial = 0;
    x_.for_each(m_.positions, [&](int c) {
      const Vec3<T> t = load_vec3(pr_.position_targets + 3 * c);
      const T size = T(1) + sqrt_(dot(t, t));
      partial += pr_.position_weights[c] * T(3) * size * size;
    });
    x_.for_each(m_.orientations, [&](int o) { partial += pr_.orientation_weights[o] * T(9); });
    x_.for_each(m_.params, [&](int p) {
      const T r = pr_.regularization_target[p];
      const T size = T(1) + (r < T(0) ? -r : r);
      partial += m_.regularization_weight[p] * size * size;
    });
    return x_.sum(partial);
  }

  // max(0, min - v) + max(0, v - max), signed so that its derivative is +1 above and -1 below.
  MOMENTUM_HD T limit_residual(int p, T v) const {
    if (v < m_.parameter_min[p]) return v - m_.parameter_min[p];
    if (v > m_.parameter_max[p]) return v - m_.parameter_max[p];
    return T(0);
  }

  // For constraint c (a position, or an orientation when `orientation`), with
  // the skeleton evaluated: its residual (3 or 9 values, unweighted) and its
  // Jacobian columns over the active parameters in columns_[rows * k + r];
  // the active parameters with a nonzero column are listed in touched_.
  // Returns the number of rows.
  MOMENTUM_HD int constraint_columns(int c, bool orientation, T residual[9]) {
    const int joint = orientation ? m_.orientation_joints[c] : m_.position_joints[c];
    const int rows = orientation ? 9 : 3;
    Vec3<T> point{T(0), T(0), T(0)};
    T current[9] = {};
    if (orientation) {
      orientation_rows(c, current);
      T target[9];
      quat_to_rows(load_quat(pr_.orientation_targets + 4 * c), target);
      for (int e = 0; e < 9; ++e) {
        residual[e] = current[e] - target[e];
      }
    } else {
      point = position_of(c);
      const Vec3<T> d = point - load_vec3(pr_.position_targets + 3 * c);
      residual[0] = d.x;
      residual[1] = d.y;
      residual[2] = d.z;
    }
    if (x_.leader()) {
      int n = 0;
      for (int a = joint; a >= 0; a = topology_parent(m_.topology[a])) {
        chain_[n++] = a;
      }
      c_->chain_length = n;
      c_->touched_count = 0;
    }
    x_.sync();
    const int n = c_->chain_length;
    // The 7 parameter motions of every joint on the chain, as derivatives of
    // the point (position) or as world rotation axes (orientation).
    x_.for_each(n, [&](int i) {
      const int a = chain_[i];
      const Transform<T> state = load_state(states_ + 8 * a);
      const JointMotions<T> mo =
          joint_motions(jp_ + 7 * a, load_vec3(m_.offsets + 3 * a), load_quat(pre_ + 4 * a), state);
      T* out = motions_ + 30 * i;
      const Vec3<T> arm = point - state.t;
      for (int k = 0; k < 3; ++k) {
        const Vec3<T> t = orientation ? Vec3<T>{T(0), T(0), T(0)} : mo.translation[k];
        const Vec3<T> r = orientation ? mo.rotation[k] : cross(mo.rotation[k], arm);
        out[3 * k] = t.x, out[3 * k + 1] = t.y, out[3 * k + 2] = t.z;
        out[9 + 3 * k] = r.x, out[9 + 3 * k + 1] = r.y, out[9 + 3 * k + 2] = r.z;
      }
      const Vec3<T> s = orientation ? Vec3<T>{T(0), T(0), T(0)} : T(kLn2) * arm;
      out[18] = s.x, out[19] = s.y, out[20] = s.z;
      for (int k = 0; k < 3; ++k) {  // the world axes, for the second derivatives
        out[21 + 3 * k] = mo.rotation[k].x, out[22 + 3 * k] = mo.rotation[k].y, out[23 + 3 * k] = mo.rotation[k].z;
      }
    });
    x_.sync();
    // Through the parameter transform, for every active parameter.
    x_.for_each(n, [&](int i) { chain_position_[chain_[i]] = i; });
    x_.sync();
    x_.for_each(m_.active_count, [&](int k) {
      Vec3<T> v{T(0), T(0), T(0)};
      for (int e = m_.active_start[k]; e < m_.active_start[k + 1]; ++e) {
        const int row = m_.active_row[e];
        const int i = chain_position_[row / 7];
        if (i >= 0) {
          const T* mo = motions_ + 30 * i + 3 * (row % 7);
          v = v + m_.transform_values[m_.active_entry[e]] * Vec3<T>{mo[0], mo[1], mo[2]};
        }
      }
      T* column = columns_ + rows * k;
      bool nonzero = v.x != T(0) || v.y != T(0) || v.z != T(0);
      if (orientation) {
        // d(R)/d(angle) about world axis v: [v]x R, row-major.
        for (int col = 0; col < 3; ++col) {
          const Vec3<T> rc{current[col], current[3 + col], current[6 + col]};
          const Vec3<T> d = cross(v, rc);
          column[col] = d.x;
          column[3 + col] = d.y;
          column[6 + col] = d.z;
        }
      } else {
        column[0] = v.x;
        column[1] = v.y;
        column[2] = v.z;
      }
      if (nonzero) {
        touched_[x_.append(&c_->touched_count)] = k;
      }
    });
    x_.sync();
    x_.for_each(n, [&](int i) { chain_position_[chain_[i]] = -1; });
    x_.sync();
    return rows;
  }

  // Order of a joint parameter's motion along the chain, outermost first:
  // chain index i counts from the constraint's joint up to the root, and in
  // one joint the translation acts in the parent's frame, then rz, ry, rx
  // (q = pre qz qy qx); the scale commutes with the rotations.
  MOMENTUM_HD static int motion_rank(int i, int q) {
    const int within = q < 3 ? 0 : q == 5 ? 1 : q == 4 ? 2 : q == 3 ? 3 : 4;
    return -8 * i + within;  // smaller: outer
  }

  // The second derivative of the constraint's residual along motions a
  // (outer) and b (inner) of chain joints, dotted with the residual: the
  // outer motion's linear part L_a applied to the inner motion's derivative,
  // L_a = 0 (translation), w_a x (rotation about world axis w_a) or ln 2
  // (scale). Positions: r . L_a(dp/dq_b). Orientations (rotations only):
  // sum over columns r_col . (w_a x (w_b x R_col)).
  MOMENTUM_HD T second_derivative(bool orientation, const T residual[9], const T current[9], int ia, int qa,
                                  int ib, int qb) const {
    if (qa < 3) return T(0);
    const T* ma = motions_ + 30 * ia;
    const T* mb = motions_ + 30 * ib;
    if (orientation) {
      if (qa == 6 || qb < 3 || qb == 6) return T(0);
      const Vec3<T> wa = load_vec3(ma + 21 + 3 * (qa - 3)), wb = load_vec3(mb + 21 + 3 * (qb - 3));
      T sum = 0;
      for (int col = 0; col < 3; ++col) {
        const Vec3<T> rc{current[col], current[3 + col], current[6 + col]};
        const Vec3<T> d = cross(wa, cross(wb, rc));
        sum += residual[col] * d.x + residual[3 + col] * d.y + residual[6 + col] * d.z;
      }
      return sum;
    }
    const Vec3<T> jb = load_vec3(mb + 3 * qb);
    const Vec3<T> r{residual[0], residual[1], residual[2]};
    if (qa == 6) return T(kLn2) * dot(r, jb);
    return dot(r, cross(load_vec3(ma + 21 + 3 * (qa - 3)), jb));
  }

  // Adds w r . d2 r / dtheta_k dtheta_l of the constraint constraint_columns
  // just evaluated (its chain and motions) to the packed Hessian, through
  // the transform's entries on the chain.
  MOMENTUM_HD void add_second_order(int c, bool orientation, const T residual[9], T w) {
    const int n = c_->chain_length;
    T current[9] = {};
    if (orientation) {
      orientation_rows(c, current);
    }
    x_.for_each(n, [&](int i) { chain_position_[chain_[i]] = i; });
    if (x_.leader()) {
      c_->touched_count = 0;
    }
    x_.sync();
    // The active parameters with an entry on the chain.
    x_.for_each(m_.active_count, [&](int k) {
      for (int e = m_.active_start[k]; e < m_.active_start[k + 1]; ++e) {
        if (chain_position_[m_.active_row[e] / 7] >= 0) {
          touched_[x_.append(&c_->touched_count)] = k;
          return;
        }
      }
    });
    x_.sync();
    const int m = c_->touched_count;
    for_each_touched_pair(m, [&](int ka, int kb) {
      T sum = 0;
      for (int ea = m_.active_start[ka]; ea < m_.active_start[ka + 1]; ++ea) {
        const int ia = chain_position_[m_.active_row[ea] / 7];
        if (ia < 0) continue;
        const int qa = m_.active_row[ea] % 7;
        const T ca = m_.transform_values[m_.active_entry[ea]];
        for (int eb = m_.active_start[kb]; eb < m_.active_start[kb + 1]; ++eb) {
          const int ib = chain_position_[m_.active_row[eb] / 7];
          if (ib < 0) continue;
          const int qb = m_.active_row[eb] % 7;
          const T cb = m_.transform_values[m_.active_entry[eb]];
          const bool a_outer = motion_rank(ia, qa) <= motion_rank(ib, qb);
          sum += ca * cb * (a_outer ? second_derivative(orientation, residual, current, ia, qa, ib, qb)
                                    : second_derivative(orientation, residual, current, ib, qb, ia, qa));
        }
      }
      hessian_[packed_index(ka, kb)] += w * sum;
    });
    x_.sync();
    x_.for_each(n, [&](int i) { chain_position_[chain_[i]] = -1; });
    x_.sync();
  }

  // f(ka, kb), ka >= kb, for every pair of the first m active parameters in
  // touched_: the entries of the packed lower triangle they touch.
  template <typename F>
  MOMENTUM_HD void for_each_touched_pair(int m, F&& f) {
    x_.for_each_pair(m, [&](int a, int b) {
      const int ka = touched_[a], kb = touched_[b];
      f(ka > kb ? ka : kb, ka > kb ? kb : ka);
    });
  }

  // (J_c u)_r for row r of the current constraint's columns.
  MOMENTUM_HD T project(int r, int rows, const T* u) {
    T partial = 0;
    x_.for_each(c_->touched_count, [&](int i) {
      const int k = touched_[i];
      partial += columns_[rows * k + r] * u[k];
    });
    return x_.sum(partial);
  }

  // H = J^T W J and g = J^T W r at theta (the skeleton must be evaluated there
  // by `energy`), plus the limit and regularisation terms.
  MOMENTUM_HD void normal_equations(const T* theta) {
    const int Pa = m_.active_count;
    x_.for_each(packed_size(), [&](int64_t e) { hessian_[e] = T(0); });
    x_.for_each(Pa, [&](int k) { gradient_[k] = T(0); });
    x_.sync();
    for (int pass = 0; pass < 2; ++pass) {
      const bool orientation = pass == 1;
      const int count = orientation ? m_.orientations : m_.positions;
      for (int c = 0; c < count; ++c) {
        T residual[9];
        const int rows = constraint_columns(c, orientation, residual);
        const T w = orientation ? pr_.orientation_weights[c] : pr_.position_weights[c];
        const int m = c_->touched_count;
        for_each_touched_pair(m, [&](int ka, int kb) {
          const T* ca = columns_ + rows * ka;
          const T* cb = columns_ + rows * kb;
          T sum = 0;
          for (int r = 0; r < rows; ++r) {
            sum += ca[r] * cb[r];
          }
          hessian_[packed_index(ka, kb)] += w * sum;
        });
        x_.for_each(m, [&](int i) {
          const int k = touched_[i];
          const T* ck = columns_ + rows * k;
          T sum = 0;
          for (int r = 0; r < rows; ++r) {
            sum += ck[r] * residual[r];
          }
          gradient_[k] += w * sum;
        });
        x_.sync();
      }
    }
    x_.for_each(Pa, [&](int k) {
      const int p = m_.active[k];
      const T v = theta[p];
      const T limit = limit_residual(p, v);
      const T wr = m_.regularization_weight[p];
      T h = wr, g = wr * (v - pr_.regularization_target[p]);
      if (limit != T(0)) {
        h += m_.limit_weight;
        g += m_.limit_weight * limit;
      }
      hessian_[packed_index(k, k)] += h;
      gradient_[k] += g;
    });
    x_.sync();
    T partial = 0;
    x_.for_each(Pa, [&](int k) { partial = max_(partial, hessian_[packed_index(k, k)]); });
    const T diag_max = x_.max(partial);
    if (x_.leader()) {
      c_->diag_max = diag_max;
    }
    x_.sync();
  }

  // Solves (H + lambda D) step = -g in place on hessian_ (destroyed).
  // Returns false if the factorisation fails.
  MOMENTUM_HD bool damped_solve(T lambda) {
    const int n = m_.active_count;
    const T floor = c_->diag_max * T(1e-9) + T(1e-30);
    x_.for_each(n, [&](int k) {
      T& d = hessian_[packed_index(k, k)];
      d += lambda * max_(d < T(0) ? -d : d, floor);  // |d|: the exact Hessian's diagonal can be negative
    });
    x_.sync();
    // Right-looking Cholesky, L overwrites the lower triangle.
    for (int k = 0; k < n; ++k) {
      if (x_.leader()) {
        const T d = hessian_[packed_index(k, k)];
        c_->failed = !(d > T(0)) || !is_finite(d);
        if (!c_->failed) {
          hessian_[packed_index(k, k)] = sqrt(d);
        }
      }
      x_.sync();
      if (c_->failed) {
        return false;
      }
      const T pivot = hessian_[packed_index(k, k)];
      x_.for_each(n - k - 1, [&](int e) { hessian_[packed_index(k + 1 + e, k)] /= pivot; });
      x_.sync();
      x_.for_each(n - k - 1, [&](int e) {
        const int i = k + 1 + e;
        const T lik = hessian_[packed_index(i, k)];
        T* row = hessian_ + packed_index(i, 0);
        for (int j = k + 1; j <= i; ++j) {
          row[j] -= lik * hessian_[packed_index(j, k)];
        }
      });
      x_.sync();
    }
    // L y = -g, then L^T step = y.
    x_.for_each(n, [&](int k) { step_[k] = -gradient_[k]; });
    x_.sync();
    for (int k = 0; k < n; ++k) {
      if (x_.leader()) {
        step_[k] /= hessian_[packed_index(k, k)];
      }
      x_.sync();
      const T yk = step_[k];
      x_.for_each(n - k - 1, [&](int e) { step_[k + 1 + e] -= hessian_[packed_index(k + 1 + e, k)] * yk; });
      x_.sync();
    }
    for (int k = n - 1; k >= 0; --k) {
      if (x_.leader()) {
        step_[k] /= hessian_[packed_index(k, k)];
      }
      x_.sync();
      const T xk = step_[k];
      x_.for_each(k, [&](int i) { step_[i] -= hessian_[packed_index(k, i)] * xk; });
      x_.sync();
    }
    return true;
  }

  // Gradient of sum(g_rows * R(q)) with respect to q (the polynomial R of quat_to_rows).
  MOMENTUM_HD static void rows_backward(Quat<T> q, const T g[9], T grad_q[4]) {
    const Transform<T> state{{T(0), T(0), T(0)}, q, T(1)};
    // skinning_matrix_backward with IBP = identity gives d/dq of sum(G * R(q)).
    const T identity[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    T grad_a[12];
    for (int r = 0; r < 3; ++r) {
      for (int col = 0; col < 3; ++col) {
        grad_a[4 * r + col] = g[3 * r + col];
      }
      grad_a[4 * r + 3] = T(0);
    }
    T grad_state[8];
    skinning_matrix_backward(state, identity, grad_a, grad_state);
    for (int i = 0; i < 4; ++i) {
      grad_q[i] = grad_state[3 + i];
    }
  }

  const Exec& x_;
  const IkModel<T>& m_;
  const IkProblem<T>& pr_;
  IkControl<T>* c_;
  IkScratchLayout layout_;
  T *theta_, *trial_, *jp_, *states_, *pre_, *hessian_, *saved_, *gradient_, *step_, *columns_, *motions_;
  int *touched_, *chain_, *chain_position_;
};

// The CPU policy: every loop runs in order on the calling thread.
struct SequentialExec {
  template <typename F>
  void for_each(int64_t n, F&& f) const {
    for (int64_t i = 0; i < n; ++i) f(i);
  }
  // f(a, b) for every a >= b in [0, n): nested loops (no square root per pair).
  template <typename F>
  void for_each_pair(int n, F&& f) const {
    for (int a = 0; a < n; ++a) {
      for (int b = 0; b <= a; ++b) f(a, b);
    }
  }
  void sync() const {}
  bool leader() const { return true; }
  template <typename T>
  T sum(T partial) const { return partial; }
  template <typename T>
  T max(T partial) const { return partial; }
  int append(int* counter) const { return (*counter)++; }
};

}  // namespace momentum_ops
