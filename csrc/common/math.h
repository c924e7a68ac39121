// Kinematics math shared by the CPU and CUDA kernels. Every formula of
// docs/conventions.md lives here once; kernels only move data around it.
//
// Layouts (per joint): joint parameters (tx, ty, tz, rx, ry, rz, log2 s),
// skeleton state (tx, ty, tz, qx, qy, qz, qw, s), quaternions xyzw.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MOMENTUM_HD __host__ __device__ __forceinline__
#else
#define MOMENTUM_HD inline
#endif

namespace momentum_ops {

template <typename T>
struct Vec3 {
  T x, y, z;
};

template <typename T>
struct Quat {
  T x, y, z, w;
};

// A similarity transform: x' = t + s * R(q) * x. This is one skeleton-state
// entry, and also the local transform of a joint.
template <typename T>
struct Transform {
  Vec3<T> t;
  Quat<T> q;
  T s;
};

// Reverse-mode accumulator of one subtree, all in world coordinates:
// `force` is the sum of position gradients, `moment` the sum of rotation
// gradients plus the moments of the forces about the subtree root's origin,
// `virial` the sum of (position - origin) . force + scale * scale-gradient.
// Rotating, translating or scaling the subtree about its root changes the loss
// by moment . axis, force . direction and virial * log-scale respectively.
template <typename T>
struct Wrench {
  Vec3<T> force;
  Vec3<T> moment;
  T virial;
};

constexpr int kJointParameters = 7;
constexpr int kStateSize = 8;

// ---------------------------------------------------------------- vectors
template <typename T>
MOMENTUM_HD Vec3<T> operator+(Vec3<T> a, Vec3<T> b) {
  return {a.x + b.x, a.y + b.y, a.z + b.z};
}
template <typename T>
MOMENTUM_HD Vec3<T> operator-(Vec3<T> a, Vec3<T> b) {
  return {a.x - b.x, a.y - b.y, a.z - b.z};
}
template <typename T>
MOMENTUM_HD Vec3<T> operator*(T s, Vec3<T> a) {
  return {s * a.x, s * a.y, s * a.z};
}
template <typename T>
MOMENTUM_HD T dot(Vec3<T> a, Vec3<T> b) {
  return a.x * b.x + a.y * b.y + a.z * b.z;
}
template <typename T>
MOMENTUM_HD Vec3<T> cross(Vec3<T> a, Vec3<T> b) {
  return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}

// ------------------------------------------------------------- quaternions
template <typename T>
MOMENTUM_HD Quat<T> quat_multiply(Quat<T> a, Quat<T> b) {
  return {
      a.w * b.x + a.x * b.w + a.y * b.z - a.z * b.y,
      a.w * b.y - a.x * b.z + a.y * b.w + a.z * b.x,
      a.w * b.z + a.x * b.y - a.y * b.x + a.z * b.w,
      a.w * b.w - a.x * b.x - a.y * b.y - a.z * b.z};
}

template <typename T>
MOMENTUM_HD Quat<T> quat_conjugate(Quat<T> q) {
  return {-q.x, -q.y, -q.z, q.w};
}

// R(q) v for a unit quaternion: v + 2w (u x v) + 2 u x (u x v).
template <typename T>
MOMENTUM_HD Vec3<T> quat_rotate(Quat<T> q, Vec3<T> v) {
  const Vec3<T> u{q.x, q.y, q.z};
  const Vec3<T> uv = cross(u, v);
  const Vec3<T> uuv = cross(u, uv);
  return v + T(2) * (q.w * uv + uuv);
}

// q / |q|. Pre-rotations are normalised once per call on the CPU (per block
// or per problem on the GPU) before the per-joint steps below, which take
// them as unit quaternions: the forward and the backward then see the same
// rotation (the backward's peeling of rotations assumes unit length), and
// the sequential chain of joints carries no extra square root. A zero
// quaternion gives NaN.
MOMENTUM_HD float sqrt_(float x) {
#if defined(__CUDA_ARCH__)
  return sqrtf(x);
#else
  return std::sqrt(x);
#endif
}
MOMENTUM_HD double sqrt_(double x) {
#if defined(__CUDA_ARCH__)
  return ::sqrt(x);
#else
  return std::sqrt(x);
#endif
}

template <typename T>
MOMENTUM_HD Quat<T> quat_normalize(Quat<T> q) {
  const T inverse = T(1) / sqrt_(q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w);
  return {q.x * inverse, q.y * inverse, q.z * inverse, q.w * inverse};
}

// R(q)^T v.
template <typename T>
MOMENTUM_HD Vec3<T> quat_rotate_inverse(Quat<T> q, Vec3<T> v) {
  return quat_rotate(quat_conjugate(q), v);
}

// Columns of R(q): R(q) e_x, R(q) e_y, R(q) e_z.
template <typename T>
MOMENTUM_HD Vec3<T> quat_axis_x(Quat<T> q) {
  return {
      T(1) - T(2) * (q.y * q.y + q.z * q.z),
      T(2) * (q.x * q.y + q.z * q.w),
      T(2) * (q.x * q.z - q.y * q.w)};
}
template <typename T>
MOMENTUM_HD Vec3<T> quat_axis_y(Quat<T> q) {
  return {
      T(2) * (q.x * q.y - q.z * q.w),
      T(1) - T(2) * (q.x * q.x + q.z * q.z),
      T(2) * (q.y * q.z + q.x * q.w)};
}
template <typename T>
MOMENTUM_HD Vec3<T> quat_axis_z(Quat<T> q) {
  return {
      T(2) * (q.x * q.z + q.y * q.w),
      T(2) * (q.y * q.z - q.x * q.w),
      T(1) - T(2) * (q.x * q.x + q.y * q.y)};
}

MOMENTUM_HD void sincos_half(float angle, float* s, float* c) {
#if defined(__CUDA_ARCH__)
  sincosf(0.5f * angle, s, c);
#else
  *s = std::sin(0.5f * angle);
  *c = std::cos(0.5f * angle);
#endif
}
MOMENTUM_HD void sincos_half(double angle, double* s, double* c) {
#if defined(__CUDA_ARCH__)
  sincos(0.5 * angle, s, c);
#else
  *s = std::sin(0.5 * angle);
  *c = std::cos(0.5 * angle);
#endif
}

// The three elementary rotations of a joint's Euler angles.
template <typename T>
struct EulerQuats {
  Quat<T> x, y, z;
};

template <typename T>
MOMENTUM_HD EulerQuats<T> euler_quats(T rx, T ry, T rz) {
  EulerQuats<T> e;
  T s, c;
  sincos_half(rx, &s, &c);
  e.x = {s, T(0), T(0), c};
  sincos_half(ry, &s, &c);
  e.y = {T(0), s, T(0), c};
  sincos_half(rz, &s, &c);
  e.z = {T(0), T(0), s, c};
  return e;
}

// Products of unit quaternions with an elementary rotation, spelled out
// (a third of the multiplies of a general product).
template <typename T>
MOMENTUM_HD Quat<T> quat_multiply_x(Quat<T> a, Quat<T> bx) {
  return {a.x * bx.w + a.w * bx.x, a.y * bx.w + a.z * bx.x,
          a.z * bx.w - a.y * bx.x, a.w * bx.w - a.x * bx.x};
}
template <typename T>
MOMENTUM_HD Quat<T> quat_multiply_y(Quat<T> a, Quat<T> by) {
  return {a.x * by.w - a.z * by.y, a.y * by.w + a.w * by.y,
          a.z * by.w + a.x * by.y, a.w * by.w - a.y * by.y};
}
template <typename T>
MOMENTUM_HD Quat<T> quat_multiply_z(Quat<T> a, Quat<T> bz) {
  return {a.x * bz.w + a.y * bz.z, a.y * bz.w - a.x * bz.z,
          a.z * bz.w + a.w * bz.z, a.w * bz.w - a.z * bz.z};
}

// ------------------------------------------------------------ load / store
template <typename T>
MOMENTUM_HD Vec3<T> load_vec3(const T* p) {
  return {p[0], p[1], p[2]};
}
template <typename T>
MOMENTUM_HD Quat<T> load_quat(const T* p) {
  return {p[0], p[1], p[2], p[3]};
}
template <typename T>
MOMENTUM_HD Transform<T> load_state(const T* p) {
  return {{p[0], p[1], p[2]}, {p[3], p[4], p[5], p[6]}, p[7]};
}
template <typename T>
MOMENTUM_HD void store_state(const Transform<T>& x, T* p) {
  p[0] = x.t.x;
  p[1] = x.t.y;
  p[2] = x.t.z;
  p[3] = x.q.x;
  p[4] = x.q.y;
  p[5] = x.q.z;
  p[6] = x.q.w;
  p[7] = x.s;
}
template <typename T>
MOMENTUM_HD Transform<T> identity_transform() {
  return {{T(0), T(0), T(0)}, {T(0), T(0), T(0), T(1)}, T(1)};
}

// ------------------------------------------------------------ skeleton states
// (a * b): apply b, then a.
template <typename T>
MOMENTUM_HD Transform<T> compose(const Transform<T>& a, const Transform<T>& b) {
  return {a.t + a.s * quat_rotate(a.q, b.t), quat_multiply(a.q, b.q), a.s * b.s};
}

template <typename T>
MOMENTUM_HD Vec3<T> transform_point(const Transform<T>& a, Vec3<T> x) {
  return a.t + a.s * quat_rotate(a.q, x);
}

MOMENTUM_HD float exp2_(float x) {
#if defined(__CUDA_ARCH__)
  return exp2f(x);
#else
  return std::exp2(x);
#endif
}
MOMENTUM_HD double exp2_(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp2(x);
#else
  return std::exp2(x);
#endif
}

// Local transform of a joint from its 7 parameters, offset and (unit)
// pre-rotation: t = offset + (tx, ty, tz), q = q_pre * qz * qy * qx, s = 2^log2s.
template <typename T>
MOMENTUM_HD Transform<T> local_transform(
    const T* joint_parameters,
    Vec3<T> offset,
    Quat<T> pre_rotation) {
  const T* p = joint_parameters;
  const EulerQuats<T> e = euler_quats(p[3], p[4], p[5]);
  const Quat<T> q = quat_multiply_x(
      quat_multiply_y(quat_multiply_z(pre_rotation, e.z), e.y), e.x);
  return {offset + Vec3<T>{p[0], p[1], p[2]}, q, exp2_(p[6])};
}

// Normalises one xyzw quaternion in place.
template <typename T>
MOMENTUM_HD void normalize_quaternion_at(T* q) {
  const Quat<T> unit = quat_normalize(load_quat(q));
  q[0] = unit.x;
  q[1] = unit.y;
  q[2] = unit.z;
  q[3] = unit.w;
}

// ------------------------------------------------------------- FK backward
template <typename T>
MOMENTUM_HD Wrench<T> zero_wrench() {
  return {{T(0), T(0), T(0)}, {T(0), T(0), T(0)}, T(0)};
}

template <typename T>
MOMENTUM_HD Wrench<T> operator+(const Wrench<T>& a, const Wrench<T>& b) {
  return {a.force + b.force, a.moment + b.moment, a.virial + b.virial};
}

template <typename T>
MOMENTUM_HD Wrench<T> load_wrench(const T* p) {
  return {{p[0], p[1], p[2]}, {p[3], p[4], p[5]}, p[6]};
}
template <typename T>
MOMENTUM_HD void store_wrench(const Wrench<T>& w, T* p) {
  p[0] = w.force.x;
  p[1] = w.force.y;
  p[2] = w.force.z;
  p[3] = w.moment.x;
  p[4] = w.moment.y;
  p[5] = w.moment.z;
  p[6] = w.virial;
}
template <typename T>
MOMENTUM_HD void add_wrench(const Wrench<T>& w, T* p) {
  p[0] += w.force.x;
  p[1] += w.force.y;
  p[2] += w.force.z;
  p[3] += w.moment.x;
  p[4] += w.moment.y;
  p[5] += w.moment.z;
  p[6] += w.virial;
}

// The gradient of a loss with respect to one skeleton-state entry
// (t, q, s) as a wrench about the joint's own origin. A world rotation dw
// changes q by 0.5 (dw, 0) * q, so its moment is 0.5 vec(grad_q * conj(q)).
template <typename T>
MOMENTUM_HD Wrench<T> state_gradient_wrench(
    const Transform<T>& state,
    const T* grad_state) {
  const Quat<T> gq = load_quat(grad_state + 3);
  const Quat<T> m = quat_multiply(gq, quat_conjugate(state.q));
  return {
      load_vec3(grad_state),
      {T(0.5) * m.x, T(0.5) * m.y, T(0.5) * m.z},
      state.s * grad_state[7]};
}

// How a joint's 7 parameters move its subtree, in world coordinates. A
// translation parameter moves it along `translation[i]` (the parent's scaled
// axis); a rotation parameter turns it about the world axis `rotation[i]`
// through the joint's origin; the scale parameter scales it about that
// origin by ln 2 per unit. Everything needed of the parent (rotation, scale,
// origin) is recovered from the joint's own global state and parameters.
template <typename T>
struct JointMotions {
  Vec3<T> translation[3];
  Vec3<T> rotation[3];
  Vec3<T> parent_to_joint;  // t_joint - t_parent
};

constexpr double kLn2 = 0.69314718055994530942;

template <typename T>
MOMENTUM_HD JointMotions<T> joint_motions(
    const T* joint_parameters,
    Vec3<T> offset,
    Quat<T> pre_rotation,
    const Transform<T>& state) {
  const T* p = joint_parameters;
  const EulerQuats<T> e = euler_quats(p[3], p[4], p[5]);
  // q_j = q_parent * q_pre * qz * qy * qx; peel off the elementary rotations.
  const Quat<T> q_before_x = quat_multiply_x(state.q, quat_conjugate(e.x));
  const Quat<T> q_before_y = quat_multiply_y(q_before_x, quat_conjugate(e.y));
  const Quat<T> q_before_z = quat_multiply_z(q_before_y, quat_conjugate(e.z));
  const Quat<T> q_parent = quat_multiply(q_before_z, quat_conjugate(pre_rotation));
  const T s_parent = state.s / exp2_(p[6]);
  JointMotions<T> m;
  // Each Euler angle turns about its elementary axis carried by the rotations before it.
  m.rotation[0] = quat_axis_x(q_before_x);
  m.rotation[1] = quat_axis_y(q_before_y);
  m.rotation[2] = quat_axis_z(q_before_z);
  m.translation[0] = s_parent * quat_axis_x(q_parent);
  m.translation[1] = s_parent * quat_axis_y(q_parent);
  m.translation[2] = s_parent * quat_axis_z(q_parent);
  m.parent_to_joint = s_parent * quat_rotate(q_parent, offset + Vec3<T>{p[0], p[1], p[2]});
  return m;
}

// One joint of the FK backward pass. `subtree` holds the wrench of the joint's
// own state gradient plus its children's subtrees, about the joint's origin.
// Writes the 7 joint-parameter gradients (the wrench projected on each
// parameter's motion) and returns the subtree's wrench moved to the parent's
// origin.
template <typename T>
MOMENTUM_HD Wrench<T> joint_backward(
    const T* joint_parameters,
    Vec3<T> offset,
    Quat<T> pre_rotation,
    const Transform<T>& state,
    const Wrench<T>& subtree,
    T* grad_joint_parameters) {
  const JointMotions<T> m = joint_motions(joint_parameters, offset, pre_rotation, state);
  for (int i = 0; i < 3; ++i) {
    grad_joint_parameters[i] = dot(m.translation[i], subtree.force);
    grad_joint_parameters[3 + i] = dot(m.rotation[i], subtree.moment);
  }
  grad_joint_parameters[6] = T(kLn2) * subtree.virial;
  const Vec3<T> r = m.parent_to_joint;
  return {
      subtree.force,
      subtree.moment + cross(r, subtree.force),
      subtree.virial + dot(r, subtree.force)};
}

// ---------------------------------------------------------------- skinning
// A 3x4 affine matrix, row-major: the top of M(state) * inverse_bind_pose.
template <typename T>
struct Affine {
  T m[12];
};

constexpr int kAffineSize = 12;

// R(q) as rows, from the same polynomial as quat_axis_* (unit quaternions).
template <typename T>
MOMENTUM_HD void quat_to_rows(Quat<T> q, T r[9]) {
  const Vec3<T> cx = quat_axis_x(q), cy = quat_axis_y(q), cz = quat_axis_z(q);
  r[0] = cx.x; r[1] = cy.x; r[2] = cz.x;
  r[3] = cx.y; r[4] = cy.y; r[5] = cz.y;
  r[6] = cx.z; r[7] = cy.z; r[8] = cz.z;
}

// A = [[s R, t], [0, 1]] * IBP; ibp is a row-major 4x4 whose last row is
// taken to be (0, 0, 0, 1) and not read.
template <typename T>
MOMENTUM_HD Affine<T> skinning_matrix(const Transform<T>& state, const T* ibp) {
  T r[9];
  quat_to_rows(state.q, r);
  Affine<T> a;
  for (int i = 0; i < 3; ++i) {
    const T r0 = state.s * r[3 * i], r1 = state.s * r[3 * i + 1], r2 = state.s * r[3 * i + 2];
    for (int c = 0; c < 4; ++c) {
      a.m[4 * i + c] = r0 * ibp[c] + r1 * ibp[4 + c] + r2 * ibp[8 + c];
    }
  }
  a.m[3] += state.t.x;
  a.m[7] += state.t.y;
  a.m[11] += state.t.z;
  return a;
}

// The rest points of one item: shared [V, 3] points (or the item's own),
// plus blend shapes [S, V, 3] weighted by the item's S blend weights, summed
// per vertex as it is read, so [..., V, 3] blended shapes never exist.
template <typename T>
struct RestPoints {
  const T* points;
  const T* blend_shapes;  // [S, V, 3], unused when count is 0
  const T* blend_weights;  // [S] of this item
  int64_t count;
  int64_t vertices;

  MOMENTUM_HD Vec3<T> operator()(int64_t v) const {
    Vec3<T> p = load_vec3(points + 3 * v);
    for (int64_t s = 0; s < count; ++s) {
      const T w = blend_weights[s];
      const T* d = blend_shapes + (s * vertices + v) * 3;
      p.x += w * d[0];
      p.y += w * d[1];
      p.z += w * d[2];
    }
    return p;
  }
};

template <typename T>
MOMENTUM_HD Vec3<T> affine_apply(const T* a, Vec3<T> x) {
  return {a[0] * x.x + a[1] * x.y + a[2] * x.z + a[3],
          a[4] * x.x + a[5] * x.y + a[6] * x.z + a[7],
          a[8] * x.x + a[9] * x.y + a[10] * x.z + a[11]};
}

// A^T-part: (A[:, :3])^T g.
template <typename T>
MOMENTUM_HD Vec3<T> affine_transpose_apply(const T* a, Vec3<T> g) {
  return {a[0] * g.x + a[4] * g.y + a[8] * g.z,
          a[1] * g.x + a[5] * g.y + a[9] * g.z,
          a[2] * g.x + a[6] * g.y + a[10] * g.z};
}

// Gradient of sum(grad_a * skinning_matrix(state, ibp)) with respect to the
// state (t, q, s), through the polynomial R(q) of quat_to_rows.
template <typename T>
MOMENTUM_HD void skinning_matrix_backward(
    const Transform<T>& state,
    const T* ibp,
    const T* grad_a,
    T* grad_state) {
  T r[9];
  quat_to_rows(state.q, r);
  // A = s R P with P the top 3x4 of IBP; dL/d(sR) = G P^T (3x3).
  T g_sr[9];
  for (int i = 0; i < 3; ++i) {
    for (int k = 0; k < 3; ++k) {
      g_sr[3 * i + k] = grad_a[4 * i] * ibp[4 * k] + grad_a[4 * i + 1] * ibp[4 * k + 1] +
          grad_a[4 * i + 2] * ibp[4 * k + 2] + grad_a[4 * i + 3] * ibp[4 * k + 3];
    }
  }
  grad_state[0] = grad_a[3];
  grad_state[1] = grad_a[7];
  grad_state[2] = grad_a[11];
  T g_s = 0;
  for (int e = 0; e < 9; ++e) {
    g_s += g_sr[e] * r[e];
  }
  grad_state[7] = g_s;
  // dL/dR = s * g_sr, then through the entries of R(q).
  T g[9];
  for (int e = 0; e < 9; ++e) {
    g[e] = state.s * g_sr[e];
  }
  const T x = state.q.x, y = state.q.y, z = state.q.z, w = state.q.w;
  // R = [[1-2(yy+zz), 2(xy-zw), 2(xz+yw)],
  //      [2(xy+zw), 1-2(xx+zz), 2(yz-xw)],
  //      [2(xz-yw), 2(yz+xw), 1-2(xx+yy)]]
  grad_state[3] = T(2) * (y * (g[1] + g[3]) + z * (g[2] + g[6]) + w * (g[7] - g[5]) -
                          T(2) * x * (g[4] + g[8]));
  grad_state[4] = T(2) * (x * (g[1] + g[3]) + z * (g[5] + g[7]) + w * (g[2] - g[6]) -
                          T(2) * y * (g[0] + g[8]));
  grad_state[5] = T(2) * (x * (g[2] + g[6]) + y * (g[5] + g[7]) + w * (g[3] - g[1]) -
                          T(2) * z * (g[0] + g[4]));
  grad_state[6] = T(2) * (x * (g[7] - g[5]) + y * (g[2] - g[6]) + z * (g[3] - g[1]));
}

// ------------------------------------------------------------- topology
// Per joint, one int32 code: parent + 1 in the low 24 bits, and two flags that
// let the reverse pass accumulate children without zero-filling a buffer.
constexpr int64_t kMaxJoints = (1 << 24) - 1;
constexpr int32_t kParentMask = 0x00ffffff;
constexpr int32_t kHasChildren = 1 << 24;  // some joint names this one as parent
constexpr int32_t kFirstChild = 1 << 25;  // the highest-index child of its parent

MOMENTUM_HD int topology_parent(int32_t code) {
  return int(code & kParentMask) - 1;
}

}  // namespace momentum_ops
