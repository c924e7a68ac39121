// Kinematics math shared by the CPU and CUDA kernels. Every formula of
// CONVENTIONS.md lives here once; kernels only move data around it.
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

// Local transform of a joint from its 7 parameters, offset and pre-rotation:
// t = offset + (tx, ty, tz), q = q_pre * qz * qy * qx, s = 2^log2s.
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

// One joint of the FK backward pass. `subtree` holds the wrench of the joint's
// own state gradient plus its children's subtrees, about the joint's origin.
// Writes the 7 joint-parameter gradients and returns the subtree's wrench
// moved to the parent's origin. Everything it needs of the parent (rotation,
// scale, origin) is recovered from the joint's own global state and local
// transform, so no parent state is read.
template <typename T>
MOMENTUM_HD Wrench<T> joint_backward(
    const T* joint_parameters,
    Vec3<T> offset,
    Quat<T> pre_rotation,
    const Transform<T>& state,
    const Wrench<T>& subtree,
    T* grad_joint_parameters) {
  const T* p = joint_parameters;
  const EulerQuats<T> e = euler_quats(p[3], p[4], p[5]);
  // q_j = q_parent * q_pre * qz * qy * qx; peel off the elementary rotations.
  const Quat<T> q_before_x = quat_multiply_x(state.q, quat_conjugate(e.x));
  const Quat<T> q_before_y = quat_multiply_y(q_before_x, quat_conjugate(e.y));
  const Quat<T> q_before_z = quat_multiply_z(q_before_y, quat_conjugate(e.z));
  const Quat<T> q_parent =
      quat_multiply(q_before_z, quat_conjugate(pre_rotation));
  const T s_parent = state.s / exp2_(p[6]);

  // Each Euler angle rotates the subtree about a world axis through the
  // joint's origin: the elementary axis carried by the rotations before it.
  grad_joint_parameters[3] = dot(quat_axis_x(q_before_x), subtree.moment);
  grad_joint_parameters[4] = dot(quat_axis_y(q_before_y), subtree.moment);
  grad_joint_parameters[5] = dot(quat_axis_z(q_before_z), subtree.moment);
  // Translating along the parent's scaled axes.
  const Vec3<T> g_t = s_parent * quat_rotate_inverse(q_parent, subtree.force);
  grad_joint_parameters[0] = g_t.x;
  grad_joint_parameters[1] = g_t.y;
  grad_joint_parameters[2] = g_t.z;
  // d(2^s)/ds = ln 2 * 2^s.
  grad_joint_parameters[6] = T(0.69314718055994530942) * subtree.virial;

  // Move the wrench to the parent's origin: r = t_j - t_parent.
  const Vec3<T> r = s_parent *
      quat_rotate(q_parent, offset + Vec3<T>{p[0], p[1], p[2]});
  return {
      subtree.force,
      subtree.moment + cross(r, subtree.force),
      subtree.virial + dot(r, subtree.force)};
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
