// CUDA kernels of linear blend skinning.
//  * skin_forward_kernel: a block owns one item and a range of vertices. It
//    first forms the item's skinning matrices A_j = M(state_j) * IBP_j in
//    shared memory (J x 12 values), then each thread skins vertices, reading
//    its K matrices from there.
//  * skin_backward_kernel: a block owns a vertex range and a group of items.
//    Per item it forms A in shared memory, accumulates dL/dA there (shared
//    atomics) and flushes the joints the range touched with global atomics;
//    the gradients of the batch-shared weights and rest points accumulate in
//    registers over the group, then one atomic per value per block.
//  * skinning_matrices_backward_kernel: dL/dA -> dL/dstate.
// skin_blended_points: skin_blended_forward_kernel (below) forward; the
// backward runs the same kernel with the rest points blended per vertex as
// they are read (RestPoints in math.h).
// Skeletons too large for shared memory form A in global memory first
// (skinning_matrices_kernel) and the kernels read it from there.
// Skin indices are validated on the host before the kernels run (one small
// device reduction and a copy); inside a CUDA-graph capture that check is
// skipped and the kernels still never read out of range: a vertex with a bad
// index comes out NaN.
#include "skinning.h"

#include "../common/cuda_utils.cuh"
#include "../common/math.h"

#include <torch/csrc/stable/library.h>

#include <cstdint>
#include <limits>
#include <tuple>

namespace momentum_ops {
namespace {

constexpr const char* kForward = "skin_points";
constexpr const char* kBackward = "skin_points_backward";
constexpr const char* kBlendedForward = "skin_blended_points";
constexpr const char* kBlendedBackward = "skin_blended_points_backward";
constexpr int kThreads = 256;
constexpr int kRegisterInfluences = 8;  // weight gradients kept in registers
constexpr int kVerticesPerBlock = 1024;  // forward: 4 per thread
constexpr size_t kMaxShared = 96 * 1024;
constexpr int kBlendItems = 8;  // items per block of the blended forward

template <typename T, typename I>
struct SkinParams {
  const T* skeleton_state;
  const T* inverse_bind_pose;
  const T* matrices;  // [B, J, 12] when they do not fit in shared memory
  const T* rest_points;
  const I* skin_indices;
  const T* skin_weights;
  const T* grad_points;  // backward
  T* out;  // points (forward)
  T* grad_matrices;  // [B, J, 12] (backward)
  T* grad_rest_points;  // backward
  T* grad_weights;  // backward
  int64_t batch;
  int64_t vertices;
  int joints;
  int influences;
  bool batched_points;
  int items_per_block;  // backward
  bool shared;  // matrices (and the backward's accumulator) in shared memory
  // skin_blended_points only (last, so the plain kernels see the same layout).
  const T* blend_shapes;  // [S, V, 3]
  const T* blend_weights;  // [B, S]
  int64_t shapes;
};

// The matrices of item b: formed in shared memory by the block, or read from
// the global ones. Ends with a barrier when it writes shared memory.
template <typename T, typename I>
__device__ __forceinline__ const T* item_matrices(const SkinParams<T, I>& p, T* shared, int64_t b) {
  const int J = p.joints;
  if (!p.shared) {
    return p.matrices + b * J * kAffineSize;
  }
  for (int j = threadIdx.x; j < J; j += blockDim.x) {
    const Affine<T> a = skinning_matrix(
        load_state(p.skeleton_state + (b * J + j) * kStateSize), p.inverse_bind_pose + j * 16);
#pragma unroll
    for (int c = 0; c < kAffineSize; ++c) {
      shared[j * kAffineSize + c] = a.m[c];
    }
  }
  __syncthreads();
  return shared;
}

// Vertex v's rest point for item b. The blend is a compile-time variant, so
// plain skinning keeps its registers (and occupancy) to itself.
template <bool kBlended, typename T, typename I>
__device__ __forceinline__ Vec3<T> rest_point(const SkinParams<T, I>& p, int64_t b, int64_t v) {
  if constexpr (kBlended) {
    return RestPoints<T>{p.rest_points, p.blend_shapes, p.blend_weights + b * p.shapes, p.shapes, p.vertices}(v);
  } else {
    const T* x = p.rest_points + (p.batched_points ? b * p.vertices * 3 : 0) + 3 * v;
    return {x[0], x[1], x[2]};
  }
}

template <typename T>
__global__ void skinning_matrices_kernel(const T* state, const T* ibp, T* out, int64_t count, int J) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) {
    return;
  }
  const Affine<T> a = skinning_matrix(load_state(state + i * kStateSize), ibp + (i % J) * 16);
#pragma unroll
  for (int c = 0; c < kAffineSize; ++c) {
    out[i * kAffineSize + c] = a.m[c];
  }
}

template <typename T>
__global__ void skinning_matrices_backward_kernel(
    const T* state, const T* ibp, const T* grad_matrices, T* grad_state, int64_t count, int J) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) {
    return;
  }
  skinning_matrix_backward(
      load_state(state + i * kStateSize), ibp + (i % J) * 16, grad_matrices + i * kAffineSize,
      grad_state + i * kStateSize);
}

template <typename T, typename I>
__global__ void __launch_bounds__(kThreads) skin_forward_kernel(const SkinParams<T, I> p) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  const int64_t V = p.vertices;
  const int64_t chunks = (V + kVerticesPerBlock - 1) / kVerticesPerBlock;
  const int64_t b = blockIdx.x / chunks;
  const int64_t first = (blockIdx.x % chunks) * kVerticesPerBlock;
  const int64_t last = min(first + kVerticesPerBlock, V);
  const T* a = item_matrices(p, reinterpret_cast<T*>(shared_bytes), b);
  const int K = p.influences;
  for (int64_t v = first + threadIdx.x; v < last; v += blockDim.x) {
    const Vec3<T> point = rest_point<false>(p, b, v);
    Vec3<T> y{T(0), T(0), T(0)};
    for (int k = 0; k < K; ++k) {
      const int64_t j = int64_t(p.skin_indices[v * K + k]);
      const T w = p.skin_weights[v * K + k];
      if (j < 0 || j >= p.joints) {
        const T nan = std::numeric_limits<T>::quiet_NaN();
        y = {nan, nan, nan};
        break;
      }
      y = y + w * affine_apply(a + j * kAffineSize, point);
    }
    T* o = p.out + (b * V + v) * 3;
    o[0] = y.x;
    o[1] = y.y;
    o[2] = y.z;
  }
}

// Blended forward: a block owns kThreads vertices and kBlendItems items. Each
// thread reads its vertex's blend-shape offsets once and adds them to the
// rest point of every item of the group in registers (the blend is a small
// matrix product; reading the shapes once per group instead of once per item
// is what keeps it off the memory system), then skins each item with the
// skinning matrices formed beforehand in global memory.
template <typename T, typename I>
__global__ void __launch_bounds__(kThreads) skin_blended_forward_kernel(const SkinParams<T, I> p) {
  const int64_t V = p.vertices;
  const int64_t chunks = (V + kThreads - 1) / kThreads;
  const int64_t v = (blockIdx.x % chunks) * kThreads + threadIdx.x;
  const int64_t b0 = (blockIdx.x / chunks) * kBlendItems;
  const int n = int(min(int64_t(kBlendItems), p.batch - b0));
  if (v >= V) {
    return;
  }
  const int64_t S = p.shapes;
  const T* rest = p.rest_points + 3 * v;
  Vec3<T> point[kBlendItems];
#pragma unroll
  for (int g = 0; g < kBlendItems; ++g) {
    point[g] = {rest[0], rest[1], rest[2]};
  }
  const T* weights = p.blend_weights + b0 * S;
  for (int64_t s = 0; s < S; ++s) {
    const T* d = p.blend_shapes + (s * V + v) * 3;
    const Vec3<T> offset{d[0], d[1], d[2]};
#pragma unroll
    for (int g = 0; g < kBlendItems; ++g) {
      if (g < n) {
        point[g] = point[g] + weights[g * S + s] * offset;
      }
    }
  }
  const int K = p.influences;
  const int J = p.joints;
#pragma unroll
  for (int g = 0; g < kBlendItems; ++g) {
    if (g >= n) {
      break;
    }
    const T* a = p.matrices + (b0 + g) * J * kAffineSize;
    Vec3<T> y{T(0), T(0), T(0)};
    for (int k = 0; k < K; ++k) {
      const int64_t j = int64_t(p.skin_indices[v * K + k]);
      if (j < 0 || j >= J) {
        const T nan = std::numeric_limits<T>::quiet_NaN();
        y = {nan, nan, nan};
        break;
      }
      y = y + p.skin_weights[v * K + k] * affine_apply(a + j * kAffineSize, point[g]);
    }
    T* o = p.out + ((b0 + g) * V + v) * 3;
    o[0] = y.x;
    o[1] = y.y;
    o[2] = y.z;
  }
}

template <typename T, typename I, bool kBlended>
__global__ void __launch_bounds__(kThreads) skin_backward_kernel(const SkinParams<T, I> p) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* matrices = reinterpret_cast<T*>(shared_bytes);  // [J, 12]
  T* accumulator = matrices + p.joints * kAffineSize;  // [J, 12]
  int* touched = reinterpret_cast<int*>(accumulator + p.joints * kAffineSize);  // [J]
  const int J = p.joints;
  const int K = p.influences;
  const int64_t V = p.vertices;
  const int64_t chunks = (V + kThreads - 1) / kThreads;
  const int64_t chunk = blockIdx.x % chunks;
  const int64_t first_item = (blockIdx.x / chunks) * p.items_per_block;
  const int64_t last_item = min(first_item + p.items_per_block, p.batch);
  const int64_t v = chunk * kThreads + threadIdx.x;
  const bool valid = v < V;

  if (p.shared) {
    for (int i = threadIdx.x; i < J * kAffineSize; i += blockDim.x) {
      accumulator[i] = T(0);
    }
    for (int i = threadIdx.x; i < J; i += blockDim.x) {
      touched[i] = 0;
    }
    __syncthreads();
  }

  Vec3<T> grad_x_sum{T(0), T(0), T(0)};
  T grad_w_sum[kRegisterInfluences];
#pragma unroll
  for (int k = 0; k < kRegisterInfluences; ++k) {
    grad_w_sum[k] = T(0);
  }

  for (int64_t b = first_item; b < last_item; ++b) {
    T* grad_a = p.shared ? accumulator : p.grad_matrices + b * J * kAffineSize;
    const T* a = item_matrices(p, matrices, b);
    if (valid) {
      const Vec3<T> point = rest_point<kBlended>(p, b, v);
      const T* gp = p.grad_points + (b * V + v) * 3;
      const Vec3<T> g{gp[0], gp[1], gp[2]};
      Vec3<T> grad_x{T(0), T(0), T(0)};
      // The lambda reads copies, not p: taking a kernel parameter's address
      // (a by-reference capture) copies the whole struct to local memory.
      const I* skin_indices = p.skin_indices;
      const T* skin_weights = p.skin_weights;
      const bool shared = p.shared;
      auto influence = [&](int k) -> T {
        const int64_t j = int64_t(skin_indices[v * K + k]);
        if (j < 0 || j >= J) {
          return std::numeric_limits<T>::quiet_NaN();
        }
        const T w = skin_weights[v * K + k];
        const T* aj = a + j * kAffineSize;
        grad_x = grad_x + w * affine_transpose_apply(aj, g);
        T* ga = grad_a + j * kAffineSize;
        const T wg[3] = {w * g.x, w * g.y, w * g.z};
#pragma unroll
        for (int r = 0; r < 3; ++r) {
          atomicAdd(ga + 4 * r, wg[r] * point.x);
          atomicAdd(ga + 4 * r + 1, wg[r] * point.y);
          atomicAdd(ga + 4 * r + 2, wg[r] * point.z);
          atomicAdd(ga + 4 * r + 3, wg[r]);
        }
        if (shared) {
          touched[j] = 1;
        }
        return dot(g, affine_apply(aj, point));
      };
#pragma unroll
      for (int k = 0; k < kRegisterInfluences; ++k) {
        if (k < K) {
          grad_w_sum[k] += influence(k);
        }
      }
      for (int k = kRegisterInfluences; k < K; ++k) {
        atomicAdd(p.grad_weights + v * K + k, influence(k));
      }
      if (kBlended || p.batched_points) {
        T* gx = p.grad_rest_points + (b * V + v) * 3;
        gx[0] = grad_x.x;
        gx[1] = grad_x.y;
        gx[2] = grad_x.z;
      } else {
        grad_x_sum = grad_x_sum + grad_x;
      }
    }
    if (p.shared) {
      __syncthreads();
      T* out = p.grad_matrices + b * J * kAffineSize;
      for (int i = threadIdx.x; i < J * kAffineSize; i += blockDim.x) {
        if (touched[i / kAffineSize]) {
          atomicAdd(out + i, accumulator[i]);
          accumulator[i] = T(0);
        }
      }
      __syncthreads();
      for (int i = threadIdx.x; i < J; i += blockDim.x) {
        touched[i] = 0;
      }
      __syncthreads();
    }
  }
  if (valid) {
#pragma unroll
    for (int k = 0; k < kRegisterInfluences; ++k) {
      if (k < K) {
        atomicAdd(p.grad_weights + v * K + k, grad_w_sum[k]);
      }
    }
    if (!kBlended && !p.batched_points) {
      atomicAdd(p.grad_rest_points + 3 * v, grad_x_sum.x);
      atomicAdd(p.grad_rest_points + 3 * v + 1, grad_x_sum.y);
      atomicAdd(p.grad_rest_points + 3 * v + 2, grad_x_sum.z);
    }
  }
}

template <typename I>
__global__ void first_bad_index_kernel(const I* indices, int64_t n, int64_t joints, unsigned long long* first_bad) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = int64_t(indices[i]);
    if (j < 0 || j >= joints) {
      atomicMin(first_bad, static_cast<unsigned long long>(i));
    }
  }
}

unsigned blocks_for(int64_t count) {
  return unsigned((count + kThreads - 1) / kThreads);
}

// Eager calls raise on a bad skin index; a graph capture skips the check.
template <typename I>
void validate_indices(const char* op, const SkinArgs& args, cudaStream_t stream) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  MOMENTUM_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture), op);
  const int64_t n = args.skin_indices.numel();
  if (capture != cudaStreamCaptureStatusNone || n == 0) {
    return;
  }
  Tensor flag = torch::stable::new_empty(args.skin_indices, {1}, ScalarType::Long);
  auto* first_bad = static_cast<unsigned long long*>(flag.mutable_data_ptr());
  MOMENTUM_CUDA_CHECK(cudaMemsetAsync(first_bad, 0xff, sizeof(unsigned long long), stream), op);
  const unsigned blocks = unsigned(std::min<int64_t>(blocks_for(n), 1024));
  first_bad_index_kernel<I><<<blocks, kThreads, 0, stream>>>(
      static_cast<const I*>(args.skin_indices.const_data_ptr()), n, args.joints, first_bad);
  MOMENTUM_CHECK_LAUNCH(op);
  const std::vector<int64_t> bad = integer_values(op, "skin_indices check", flag);
  if (bad[0] != -1) {  // 0xff.. reads back as -1
    Tensor flat = torch::stable::view(args.skin_indices, {n});
    const std::vector<int64_t> value =
        integer_values(op, "skin_indices", torch::stable::narrow(flat, 0, bad[0], 1));
    fail_skin_index(op, args, bad[0], value[0]);
  }
}

template <typename T, typename I>
SkinParams<T, I> make_params(const SkinArgs& args) {
  SkinParams<T, I> p{};
  p.skeleton_state = static_cast<const T*>(args.skeleton_state.const_data_ptr());
  p.inverse_bind_pose = static_cast<const T*>(args.inverse_bind_pose.const_data_ptr());
  p.rest_points = static_cast<const T*>(args.rest_points.const_data_ptr());
  p.skin_indices = static_cast<const I*>(args.skin_indices.const_data_ptr());
  p.skin_weights = static_cast<const T*>(args.skin_weights.const_data_ptr());
  p.batch = args.batch;
  p.vertices = args.vertices;
  p.joints = int(args.joints);
  p.influences = int(args.influences);
  p.batched_points = args.batched_points;
  p.shapes = args.shapes;
  if (args.shapes > 0) {
    p.blend_shapes = static_cast<const T*>(args.blend_shapes.const_data_ptr());
    p.blend_weights = static_cast<const T*>(args.blend_weights.const_data_ptr());
  }
  return p;
}

// Fills `matrices` ([B, J, 12]) on the stream.
template <typename T>
void launch_skinning_matrices(const char* op, const SkinArgs& args, Tensor& matrices, cudaStream_t stream) {
  const int64_t count = args.batch * args.joints;
  if (count == 0) {
    return;
  }
  skinning_matrices_kernel<T><<<blocks_for(count), kThreads, 0, stream>>>(
      static_cast<const T*>(args.skeleton_state.const_data_ptr()),
      static_cast<const T*>(args.inverse_bind_pose.const_data_ptr()),
      static_cast<T*>(matrices.mutable_data_ptr()), count, int(args.joints));
  MOMENTUM_CHECK_LAUNCH(op);
}

// Chooses where the skinning matrices live: shared memory when the block's
// arrays fit (the forward needs A, the backward A, dL/dA and a flag per
// joint), else global memory, formed here. Returns the dynamic shared size.
template <typename T, typename I>
size_t prepare_matrices(const char* op, const SkinArgs& args, SkinParams<T, I>& p, Tensor& matrices,
                        bool backward, cudaStream_t stream) {
  const size_t shared = backward ? args.joints * (2 * kAffineSize * sizeof(T) + sizeof(int))
                                 : args.joints * kAffineSize * sizeof(T);
  p.shared = shared <= kMaxShared;
  if (p.shared) {
    return shared;
  }
  matrices = torch::stable::new_empty(args.skeleton_state, {args.batch, args.joints, kAffineSize});
  launch_skinning_matrices<T>(op, args, matrices, stream);
  p.matrices = static_cast<const T*>(matrices.const_data_ptr());
  return 0;
}

template <typename Kernel>
void set_shared_limit(Kernel kernel, size_t bytes, const char* op) {
  MOMENTUM_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)), op);
}

// The callers hold a guard on the tensors' device.
Tensor skin_forward(const char* op, const SkinArgs& args) {
  const cudaStream_t stream = current_cuda_stream(args.skeleton_state);
  Tensor out = torch::stable::new_empty(
      args.skeleton_state, concat(args.batch_shape, {args.vertices, 3}));
  dispatch_skin(args, [&](auto t, auto i) {
    using T = decltype(t);
    using I = decltype(i);
    validate_indices<I>(op, args, stream);
    if (args.batch == 0 || args.vertices == 0) {
      return;
    }
    SkinParams<T, I> p = make_params<T, I>(args);
    Tensor matrices;
    p.out = static_cast<T*>(out.mutable_data_ptr());
    if (args.shapes > 0) {
      matrices = torch::stable::new_empty(args.skeleton_state, {args.batch, args.joints, kAffineSize});
      launch_skinning_matrices<T>(op, args, matrices, stream);
      p.matrices = static_cast<const T*>(matrices.const_data_ptr());
      const int64_t blocks = ((args.vertices + kThreads - 1) / kThreads) *
          ((args.batch + kBlendItems - 1) / kBlendItems);
      skin_blended_forward_kernel<T, I><<<unsigned(blocks), kThreads, 0, stream>>>(p);
      MOMENTUM_CHECK_LAUNCH(op);
      return;
    }
    const size_t shared = prepare_matrices<T>(op, args, p, matrices, false, stream);
    const auto kernel = skin_forward_kernel<T, I>;
    set_shared_limit(kernel, shared, op);
    const int64_t blocks = args.batch * ((args.vertices + kVerticesPerBlock - 1) / kVerticesPerBlock);
    kernel<<<unsigned(blocks), kThreads, shared, stream>>>(p);
    MOMENTUM_CHECK_LAUNCH(op);
  });
  return out;
}

std::tuple<Tensor, Tensor, Tensor> skin_backward(const char* op, const SkinArgs& args, const Tensor& grad_points) {
  const Tensor grad = check_skin_grad(op, args, grad_points);
  const cudaStream_t stream = current_cuda_stream(args.skeleton_state);
  // Accumulated with atomics, so they start at zero.
  Tensor grad_state = torch::stable::new_empty(args.skeleton_state, args.skeleton_state.sizes());
  Tensor grad_rest = torch::stable::new_zeros(
      args.rest_points, args.per_item_rest_grad ? concat(args.batch_shape, {args.vertices, 3})
                                                : args.rest_points.sizes());
  Tensor grad_weights = torch::stable::new_zeros(args.skin_weights, args.skin_weights.sizes());
  dispatch_skin(args, [&](auto t, auto i) {
    using T = decltype(t);
    using I = decltype(i);
    validate_indices<I>(op, args, stream);
    const int64_t count = args.batch * args.joints;
    if (count == 0) {
      return;
    }
    Tensor grad_matrices = torch::stable::new_zeros(args.skeleton_state, {args.batch, args.joints, kAffineSize});
    if (args.vertices > 0) {
      SkinParams<T, I> p = make_params<T, I>(args);
      Tensor matrices;
      const size_t shared = prepare_matrices<T>(op, args, p, matrices, true, stream);
      p.grad_points = static_cast<const T*>(grad.const_data_ptr());
      p.grad_matrices = static_cast<T*>(grad_matrices.mutable_data_ptr());
      p.grad_rest_points = static_cast<T*>(grad_rest.mutable_data_ptr());
      p.grad_weights = static_cast<T*>(grad_weights.mutable_data_ptr());
      // Enough blocks to fill the GPU a few times over; the rest of the batch
      // loops inside a block, which keeps the atomics on shared data few.
      const int64_t chunks = (args.vertices + kThreads - 1) / kThreads;
      const int64_t target_blocks = int64_t(8) * multiprocessor_count(args.skeleton_state.get_device_index());
      const int64_t groups = std::max<int64_t>(1, std::min<int64_t>(args.batch, target_blocks / chunks));
      p.items_per_block = int((args.batch + groups - 1) / groups);
      const auto kernel = args.shapes > 0 ? skin_backward_kernel<T, I, true> : skin_backward_kernel<T, I, false>;
      set_shared_limit(kernel, shared, op);
      const int64_t blocks = chunks * ((args.batch + p.items_per_block - 1) / p.items_per_block);
      kernel<<<unsigned(blocks), kThreads, shared, stream>>>(p);
      MOMENTUM_CHECK_LAUNCH(op);
    }
    skinning_matrices_backward_kernel<T><<<blocks_for(count), kThreads, 0, stream>>>(
        static_cast<const T*>(args.skeleton_state.const_data_ptr()),
        static_cast<const T*>(args.inverse_bind_pose.const_data_ptr()),
        static_cast<const T*>(grad_matrices.const_data_ptr()),
        static_cast<T*>(grad_state.mutable_data_ptr()), count, int(args.joints));
    MOMENTUM_CHECK_LAUNCH(op);
  });
  return {grad_state, grad_rest, grad_weights};
}

Tensor skin_forward_cuda(
    Tensor skeleton_state,
    Tensor inverse_bind_pose,
    Tensor rest_points,
    Tensor skin_indices,
    Tensor skin_weights) {
  const torch::stable::accelerator::DeviceGuard guard(skeleton_state.get_device_index());
  return skin_forward(
      kForward, check_skin(kForward, skeleton_state, inverse_bind_pose, rest_points, skin_indices, skin_weights));
}

std::tuple<Tensor, Tensor, Tensor> skin_backward_cuda(
    Tensor grad_points,
    Tensor skeleton_state,
    Tensor inverse_bind_pose,
    Tensor rest_points,
    Tensor skin_indices,
    Tensor skin_weights) {
  const torch::stable::accelerator::DeviceGuard guard(skeleton_state.get_device_index());
  return skin_backward(
      kBackward, check_skin(kBackward, skeleton_state, inverse_bind_pose, rest_points, skin_indices, skin_weights),
      grad_points);
}

Tensor skin_blended_forward_cuda(
    Tensor skeleton_state,
    Tensor inverse_bind_pose,
    Tensor rest_points,
    Tensor blend_shapes,
    Tensor blend_weights,
    Tensor skin_indices,
    Tensor skin_weights) {
  const torch::stable::accelerator::DeviceGuard guard(skeleton_state.get_device_index());
  return skin_forward(kBlendedForward,
                      check_blended_skin(kBlendedForward, skeleton_state, inverse_bind_pose, rest_points,
                                         blend_shapes, blend_weights, skin_indices, skin_weights));
}

std::tuple<Tensor, Tensor, Tensor> skin_blended_backward_cuda(
    Tensor grad_points,
    Tensor skeleton_state,
    Tensor inverse_bind_pose,
    Tensor rest_points,
    Tensor blend_shapes,
    Tensor blend_weights,
    Tensor skin_indices,
    Tensor skin_weights) {
  const torch::stable::accelerator::DeviceGuard guard(skeleton_state.get_device_index());
  return skin_backward(
      kBlendedBackward,
      check_blended_skin(kBlendedBackward, skeleton_state, inverse_bind_pose, rest_points, blend_shapes,
                         blend_weights, skin_indices, skin_weights),
      grad_points);
}

}  // namespace
}  // namespace momentum_ops

STABLE_TORCH_LIBRARY_IMPL(momentum, CUDA, m) {
  m.impl("skin_points", TORCH_BOX(&momentum_ops::skin_forward_cuda));
  m.impl("skin_points_backward", TORCH_BOX(&momentum_ops::skin_backward_cuda));
  m.impl("skin_blended_points", TORCH_BOX(&momentum_ops::skin_blended_forward_cuda));
  m.impl("skin_blended_points_backward", TORCH_BOX(&momentum_ops::skin_blended_backward_cuda));
}
