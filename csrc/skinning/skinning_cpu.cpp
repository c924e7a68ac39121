// CPU kernels of linear blend skinning. The skinning matrices A_j =
// M(state_j) * IBP_j are formed once per (item, joint); vertices then read them.
#include "skinning.h"

#include "../common/math.h"

#include <torch/csrc/stable/library.h>

#include <algorithm>
#include <tuple>

namespace momentum_ops {
namespace {

constexpr int64_t kVertexChunk = 2048;
// Items blended together: each blend shape's rows of a vertex chunk are read
// once for the group (the blend is a small matrix product per chunk).
constexpr int64_t kBlendGroup = 64;
constexpr int64_t kBlendChunk = 256;
// The backward's group also holds a dL/dA per item: at most this many bytes of them.
constexpr int64_t kBlendGroupBytes = 1 << 20;

// The blended rest points of items [b0, b0 + n) for vertices [v0, v1) into
// out ([n][3 * (v1 - v0)]), a small matrix product per chunk: a tile of
// kBlendTile values per item is summed over the shapes in registers, the
// shapes' tile rows (S x kBlendTile) staying in L1 across the group's items.
// Only this chunk-sized scratch exists, never [B, V, 3].
template <typename T>
void blend_chunk(const SkinArgs& args, int64_t b0, int64_t n, int64_t v0, int64_t v1, T* out) {
  constexpr int64_t kBlendTile = 32;
  const int64_t width = 3 * (v1 - v0), V = args.vertices, S = args.shapes;
  const T* rest = static_cast<const T*>(args.rest_points.const_data_ptr()) + 3 * v0;
  const T* shapes = static_cast<const T*>(args.blend_shapes.const_data_ptr()) + 3 * v0;
  const T* blend_weights = static_cast<const T*>(args.blend_weights.const_data_ptr()) + b0 * S;
  for (int64_t i0 = 0; i0 < width; i0 += kBlendTile) {
    const int64_t m = std::min(kBlendTile, width - i0);
    for (int64_t g = 0; g < n; ++g) {
      T acc[kBlendTile];
      for (int64_t i = 0; i < kBlendTile; ++i) {
        acc[i] = i < m ? rest[i0 + i] : T(0);
      }
      const T* w = blend_weights + g * S;
      for (int64_t s = 0; s < S; ++s) {
        const T* row = shapes + s * V * 3 + i0;
        const T ws = w[s];
        if (m == kBlendTile) {
          for (int64_t i = 0; i < kBlendTile; ++i) {
            acc[i] += ws * row[i];
          }
        } else {
          for (int64_t i = 0; i < m; ++i) {
            acc[i] += ws * row[i];
          }
        }
      }
      std::copy(acc, acc + m, out + g * width + i0);
    }
  }
}

// Vertex v's rest point for item b of a group starting at b0, in the vertex
// chunk [v0, v1): from the group's blended scratch, else the rest points.
template <typename T>
struct ChunkRestPoints {
  RestPoints<T> rest;
  const T* blended;  // the item's [3 * (v1 - v0)] blended points, or null
  int64_t v0;

  Vec3<T> operator()(int64_t v) const {
    return blended != nullptr ? load_vec3(blended + 3 * (v - v0)) : rest(v);
  }
};

template <typename T>
ChunkRestPoints<T> chunk_rest_points(const SkinArgs& args, const std::vector<T>& scratch, int64_t b0, int64_t b,
                                     int64_t v0, int64_t v1) {
  const T* blended = args.shapes > 0 ? scratch.data() + (b - b0) * 3 * (v1 - v0) : nullptr;
  return {args.rest<T>(b), blended, v0};
}

template <typename T>
void skinning_matrices(const SkinArgs& args, std::vector<T>& out) {
  const T* state = static_cast<const T*>(args.skeleton_state.const_data_ptr());
  const T* ibp = static_cast<const T*>(args.inverse_bind_pose.const_data_ptr());
  const int64_t J = args.joints;
  out.resize(size_t(args.batch * J * kAffineSize));
  T* a = out.data();
  torch::stable::parallel_for(0, args.batch * J, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Affine<T> m = skinning_matrix(load_state(state + i * kStateSize), ibp + (i % J) * 16);
      std::copy(m.m, m.m + kAffineSize, a + i * kAffineSize);
    }
  });
}

template <typename T, typename I>
void skin_forward_cpu_impl(const SkinArgs& args, Tensor& out) {
  std::vector<T> matrices;
  skinning_matrices<T>(args, matrices);
  const I* indices = static_cast<const I*>(args.skin_indices.const_data_ptr());
  const T* weights = static_cast<const T*>(args.skin_weights.const_data_ptr());
  T* points = static_cast<T*>(out.mutable_data_ptr());
  const int64_t V = args.vertices, K = args.influences, J = args.joints, B = args.batch;
  const bool blended = args.shapes > 0;
  const int64_t chunk = blended ? kBlendChunk : kVertexChunk;
  const int64_t group = blended ? kBlendGroup : 1;
  const int64_t chunks = (V + chunk - 1) / chunk;
  const int64_t groups = (B + group - 1) / group;
  torch::stable::parallel_for(0, groups * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(size_t(blended ? group * chunk * 3 : 0));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b0 = (task / chunks) * group;
      const int64_t n = std::min(group, B - b0);
      const int64_t v0 = (task % chunks) * chunk;
      const int64_t v1 = std::min(V, v0 + chunk);
      if (blended) {
        blend_chunk(args, b0, n, v0, v1, scratch.data());
      }
      for (int64_t b = b0; b < b0 + n; ++b) {
        const T* a = matrices.data() + b * J * kAffineSize;
        const ChunkRestPoints<T> rest = chunk_rest_points(args, scratch, b0, b, v0, v1);
        for (int64_t v = v0; v < v1; ++v) {
          const Vec3<T> p = rest(v);
          Vec3<T> y{T(0), T(0), T(0)};
          for (int64_t k = 0; k < K; ++k) {
            const T w = weights[v * K + k];
            y = y + w * affine_apply(a + int64_t(indices[v * K + k]) * kAffineSize, p);
          }
          T* o = points + (b * V + v) * 3;
          o[0] = y.x;
          o[1] = y.y;
          o[2] = y.z;
        }
      }
    }
  });
}

// Per item: dL/dA_j = sum over its vertices of w * g [x; 1]^T, then through A
// to the state. Gradients of unbatched rest points and weights are summed over
// the batch in one partial buffer per task.
template <typename T, typename I>
void skin_backward_cpu_impl(
    const SkinArgs& args,
    const Tensor& grad_points,
    Tensor& grad_state,
    Tensor& grad_rest,
    Tensor& grad_weights) {
  std::vector<T> matrices;
  skinning_matrices<T>(args, matrices);
  const T* state = static_cast<const T*>(args.skeleton_state.const_data_ptr());
  const T* ibp = static_cast<const T*>(args.inverse_bind_pose.const_data_ptr());
  const I* indices = static_cast<const I*>(args.skin_indices.const_data_ptr());
  const T* weights = static_cast<const T*>(args.skin_weights.const_data_ptr());
  const T* grad = static_cast<const T*>(grad_points.const_data_ptr());
  T* g_state = static_cast<T*>(grad_state.mutable_data_ptr());
  T* g_rest = static_cast<T*>(grad_rest.mutable_data_ptr());
  T* g_weights = static_cast<T*>(grad_weights.mutable_data_ptr());
  const int64_t V = args.vertices, K = args.influences, J = args.joints, B = args.batch;

  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(B, torch::stable::get_num_threads()));
  // Partial sums over the batch: grad of weights always, of rest points when shared.
  const bool per_item = args.per_item_rest_grad;
  const int64_t partial_size = V * K + (per_item ? 0 : V * 3);
  std::vector<T> partials(size_t(tasks * partial_size), T(0));
  const bool blended = args.shapes > 0;
  const int64_t chunk = blended ? kBlendChunk : V;
  const int64_t group = blended ? std::clamp<int64_t>(kBlendGroupBytes / int64_t(J * kAffineSize * sizeof(T) + 1),
                                                      1, kBlendGroup)
                                : 1;
  torch::stable::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> grad_a(size_t(group * J * kAffineSize));
    std::vector<T> scratch(size_t(blended ? group * chunk * 3 : 0));
    for (int64_t task = begin; task < end; ++task) {
      T* partial_w = partials.data() + task * partial_size;
      T* partial_x = partial_w + V * K;
      const int64_t last = B * (task + 1) / tasks;
      // Items in groups (one when nothing is blended), vertices in chunks, so
      // that a chunk's blended points serve the whole group.
      for (int64_t b0 = B * task / tasks; b0 < last; b0 += group) {
        const int64_t n = std::min(group, last - b0);
        std::fill(grad_a.begin(), grad_a.end(), T(0));
        for (int64_t v0 = 0; v0 < V; v0 += chunk) {
          const int64_t v1 = std::min(V, v0 + chunk);
          if (blended) {
            blend_chunk(args, b0, n, v0, v1, scratch.data());
          }
          for (int64_t b = b0; b < b0 + n; ++b) {
            const T* a = matrices.data() + b * J * kAffineSize;
            const ChunkRestPoints<T> rest = chunk_rest_points(args, scratch, b0, b, v0, v1);
            T* grad_a_b = grad_a.data() + (b - b0) * J * kAffineSize;
            T* gx_out = per_item ? g_rest + b * V * 3 : partial_x;
            for (int64_t v = v0; v < v1; ++v) {
              const Vec3<T> p = rest(v);
              const Vec3<T> g = load_vec3(grad + (b * V + v) * 3);
              Vec3<T> gx{T(0), T(0), T(0)};
              for (int64_t k = 0; k < K; ++k) {
                const int64_t j = int64_t(indices[v * K + k]);
                const T w = weights[v * K + k];
                const T* aj = a + j * kAffineSize;
                partial_w[v * K + k] += dot(g, affine_apply(aj, p));
                gx = gx + w * affine_transpose_apply(aj, g);
                T* ga = grad_a_b + j * kAffineSize;
                const T wg[3] = {w * g.x, w * g.y, w * g.z};
                for (int r = 0; r < 3; ++r) {
                  ga[4 * r] += wg[r] * p.x;
                  ga[4 * r + 1] += wg[r] * p.y;
                  ga[4 * r + 2] += wg[r] * p.z;
                  ga[4 * r + 3] += wg[r];
                }
              }
              if (per_item) {
                gx_out[3 * v] = gx.x;
                gx_out[3 * v + 1] = gx.y;
                gx_out[3 * v + 2] = gx.z;
              } else {
                gx_out[3 * v] += gx.x;
                gx_out[3 * v + 1] += gx.y;
                gx_out[3 * v + 2] += gx.z;
              }
            }
          }
        }
        for (int64_t b = b0; b < b0 + n; ++b) {
          for (int64_t j = 0; j < J; ++j) {
            const int64_t i = b * J + j;
            skinning_matrix_backward(
                load_state(state + i * kStateSize), ibp + j * 16,
                grad_a.data() + ((b - b0) * J + j) * kAffineSize, g_state + i * kStateSize);
          }
        }
      }
    }
  });
  // Reduce the partials (few tasks, small buffers).
  for (int64_t i = 0; i < V * K; ++i) {
    T total = 0;
    for (int64_t t = 0; t < tasks; ++t) {
      total += partials[size_t(t * partial_size + i)];
    }
    g_weights[i] = total;
  }
  if (!per_item) {
    for (int64_t i = 0; i < V * 3; ++i) {
      T total = 0;
      for (int64_t t = 0; t < tasks; ++t) {
        total += partials[size_t(t * partial_size + V * K + i)];
      }
      g_rest[i] = total;
    }
  }
}

Tensor skin_forward(const SkinArgs& args) {
  Tensor out = torch::stable::new_empty(
      args.skeleton_state, concat(args.batch_shape, {args.vertices, 3}));
  dispatch_skin(args, [&](auto t, auto i) {
    skin_forward_cpu_impl<decltype(t), decltype(i)>(args, out);
  });
  return out;
}

std::tuple<Tensor, Tensor, Tensor> skin_backward(const char* op, const SkinArgs& args, const Tensor& grad_points) {
  const Tensor grad = check_skin_grad(op, args, grad_points);
  Tensor grad_state = torch::stable::new_empty(args.skeleton_state, args.skeleton_state.sizes());
  Tensor grad_rest = torch::stable::new_empty(
      args.rest_points, args.per_item_rest_grad ? concat(args.batch_shape, {args.vertices, 3})
                                                : args.rest_points.sizes());
  Tensor grad_weights = torch::stable::new_empty(args.skin_weights, args.skin_weights.sizes());
  dispatch_skin(args, [&](auto t, auto i) {
    skin_backward_cpu_impl<decltype(t), decltype(i)>(args, grad, grad_state, grad_rest, grad_weights);
  });
  return {grad_state, grad_rest, grad_weights};
}

Tensor skin_forward_cpu(MOMENTUM_SKIN_PARAMS) {
  return skin_forward(check_skin(kSkinForward, MOMENTUM_SKIN_ARGS));
}

std::tuple<Tensor, Tensor, Tensor> skin_backward_cpu(Tensor grad_points, MOMENTUM_SKIN_PARAMS) {
  return skin_backward(kSkinBackward, check_skin(kSkinBackward, MOMENTUM_SKIN_ARGS), grad_points);
}

Tensor skin_blended_forward_cpu(MOMENTUM_BLENDED_SKIN_PARAMS) {
  return skin_forward(check_blended_skin(kBlendedSkinForward, MOMENTUM_BLENDED_SKIN_ARGS));
}

std::tuple<Tensor, Tensor, Tensor> skin_blended_backward_cpu(Tensor grad_points, MOMENTUM_BLENDED_SKIN_PARAMS) {
  return skin_backward(kBlendedSkinBackward, check_blended_skin(kBlendedSkinBackward, MOMENTUM_BLENDED_SKIN_ARGS),
                       grad_points);
}

}  // namespace
}  // namespace momentum_ops

STABLE_TORCH_LIBRARY_IMPL(momentum, CPU, m) {
  m.impl("skin_points", TORCH_BOX(&momentum_ops::skin_forward_cpu));
  m.impl("skin_points_backward", TORCH_BOX(&momentum_ops::skin_backward_cpu));
  m.impl("skin_blended_points", TORCH_BOX(&momentum_ops::skin_blended_forward_cpu));
  m.impl("skin_blended_points_backward", TORCH_BOX(&momentum_ops::skin_blended_backward_cpu));
}
