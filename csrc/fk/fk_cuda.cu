// CUDA kernels of forward kinematics. One thread per batch item walks the
// joints in order (the tree is a sequential dependency). A block owns kItems
// items and kThreads threads: all threads move tiles of a few joints between
// global and shared memory (cp.async, double-buffered so the next tile loads
// while this one is computed), coalesced across items instead of strided by
// J * 7; one thread per item does the math of math.h on the tile.
#include "fk.h"

#include "../common/cuda_utils.cuh"
#include "../common/math.h"

#include <torch/csrc/stable/library.h>

#include <tuple>

namespace momentum_ops {
namespace {

constexpr const char* kOp = "momentum::joint_parameters_to_skeleton_state";
constexpr int kThreads = 256;
constexpr int kItems = 64;

// A launch-local topology flag of the backward: some child of the joint lies
// in a later tile, so the joint's accumulator row in global memory was
// written before its tile starts. Otherwise every child adds into the shared
// tile, and the global row (never written) must not be read.
constexpr int32_t kChildInLaterTile = 1 << 26;

// Joints per tile, chosen so a block's shared memory stays near 50 KB (3-4
// blocks per multiprocessor). Odd row strides keep each item's row in its own
// bank.
template <typename T, bool kBackward>
struct Tiling {
  static constexpr int joints = (sizeof(T) == 4 ? 8 : 4) / (kBackward ? 2 : 1);
  static constexpr int param_stride = joints * kJointParameters + 1;
  static constexpr int state_stride = joints * kStateSize + 1;
  // forward: 2 parameter tiles + 1 state tile;
  // backward: 2 x (parameters, state, state gradient) + 1 gradient tile.
  static constexpr int per_item = kBackward
      ? 2 * (param_stride + 2 * state_stride) + param_stride
      : 2 * param_stride + state_stride;
  // Per tile joint, the offset (3) and pre-rotation (4), double-buffered.
  static constexpr int skeleton_size = joints * 7;
  static constexpr size_t shared_bytes = sizeof(T) * (per_item * kItems + 2 * skeleton_size);
};

// Starts copying the offsets and pre-rotations of joints [j0, j0 + count)
// into `tile` (7 values per joint: offset xyz, then pre-rotation xyzw).
template <typename T>
__device__ __forceinline__ void skeleton_load_async(
    T* tile, const T* offsets, const T* pre_rotations, int j0, int count) {
  for (int f = threadIdx.x; f < count * 7; f += blockDim.x) {
    const int k = f / 7;
    const int c = f - k * 7;
    const T* src = c < 3 ? offsets + 3 * (j0 + k) + c : pre_rotations + 4 * (j0 + k) + (c - 3);
    __pipeline_memcpy_async(tile + f, src, sizeof(T));
  }
}

template <typename T>
struct FkParams {
  const T* joint_parameters;
  const T* offsets;
  const T* pre_rotations;
  const T* skeleton_state;  // backward only
  const T* grad_skeleton_state;  // backward only
  T* out;  // skeleton state (forward) or joint-parameter gradients (backward)
  int64_t batch;
  int joints;
  TopologyParam topology;
};

template <typename T>
__global__ void __launch_bounds__(kThreads) fk_forward_kernel(const __grid_constant__ FkParams<T> p) {
  using Tile = Tiling<T, false>;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* const base = reinterpret_cast<T*>(shared_bytes);
  // Two parameter tiles (double buffer), then the state tile.
  auto param_tile = [&](int tile) { return base + (tile & 1) * kItems * Tile::param_stride; };
  T* const state_tile = base + 2 * kItems * Tile::param_stride;
  auto skeleton_tile = [&](int tile) {
    return state_tile + kItems * Tile::state_stride + (tile & 1) * Tile::skeleton_size;
  };

  const int64_t first_item = int64_t(blockIdx.x) * kItems;
  const int items = int(p.batch - first_item < kItems ? p.batch - first_item : kItems);
  const int J = p.joints;
  const int tiles = (J + Tile::joints - 1) / Tile::joints;
  const int32_t* topology = p.topology.get();
  const int tid = threadIdx.x;
  T* const my_tile = state_tile + tid * Tile::state_stride;
  const T* const my_states = p.out + (first_item + tid) * J * kStateSize;

  auto prefetch = [&](int tile) {
    const int j0 = tile * Tile::joints;
    const int width = min(Tile::joints, J - j0) * kJointParameters;
    tile_load_async(
        param_tile(tile), Tile::param_stride,
        p.joint_parameters + (first_item * J + j0) * kJointParameters,
        int64_t(J) * kJointParameters, items, width);
    skeleton_load_async(skeleton_tile(tile), p.offsets, p.pre_rotations, j0, width / kJointParameters);
    __pipeline_commit();
  };

  prefetch(0);
  for (int tile = 0; tile < tiles; ++tile) {
    const int j0 = tile * Tile::joints;
    const int tile_joints = min(Tile::joints, J - j0);
    if (tile + 1 < tiles) {
      prefetch(tile + 1);
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    __syncthreads();
    // Unit pre-rotations, once per tile for all the block's items.
    if (tid < tile_joints) {
      normalize_quaternion_at(skeleton_tile(tile) + 7 * tid + 3);
    }
    __syncthreads();
    if (tid < items) {
      const T* my_params = param_tile(tile) + tid * Tile::param_stride;
      const T* skeleton = skeleton_tile(tile);
      for (int k = 0; k < tile_joints; ++k) {
        const int j = j0 + k;
        Transform<T> global = local_transform(
            my_params + k * kJointParameters, load_vec3(skeleton + 7 * k),
            load_quat(skeleton + 7 * k + 3));
        const int parent = topology_parent(topology[j]);
        if (parent >= 0) {
          // Parents in this tile are in shared memory; earlier ones were
          // stored by the block before the last barrier.
          const T* parent_state = parent >= j0
              ? my_tile + (parent - j0) * kStateSize
              : my_states + parent * kStateSize;
          global = compose(load_state(parent_state), global);
        }
        store_state(global, my_tile + k * kStateSize);
      }
    }
    __syncthreads();
    tile_store(
        state_tile, Tile::state_stride, p.out + (first_item * J + j0) * kStateSize,
        int64_t(J) * kStateSize, items, tile_joints * kStateSize);
  }
}

// Reverse pass over tiles from the last joint to the first. A joint's row of
// the gradient output first accumulates its children's wrenches (in shared
// memory when the parent is in the tile, in global memory otherwise), then is
// overwritten by the joint's own parameter gradients. Accumulator rows are
// read when their tile starts, after every later tile (all the children) is
// done; the read-only inputs are prefetched a tile ahead.
template <typename T>
__global__ void __launch_bounds__(kThreads) fk_backward_kernel(const __grid_constant__ FkParams<T> p) {
  using Tile = Tiling<T, true>;
  constexpr int kInputs = Tile::param_stride + 2 * Tile::state_stride;  // per item
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* const base = reinterpret_cast<T*>(shared_bytes);
  // Two input tiles (double buffer), then the gradient tile.
  auto input_tile = [&](int order) { return base + (order & 1) * kItems * kInputs; };
  T* const grad_tile = base + 2 * kItems * kInputs;
  auto skeleton_tile = [&](int order) {
    return grad_tile + kItems * Tile::param_stride + (order & 1) * Tile::skeleton_size;
  };

  const int64_t first_item = int64_t(blockIdx.x) * kItems;
  const int items = int(p.batch - first_item < kItems ? p.batch - first_item : kItems);
  const int J = p.joints;
  const int tiles = (J + Tile::joints - 1) / Tile::joints;
  const int32_t* topology = p.topology.get();
  const int tid = threadIdx.x;
  T* const my_grads = p.out + (first_item + tid) * J * kJointParameters;
  const int64_t param_row = int64_t(J) * kJointParameters;
  const int64_t state_row = int64_t(J) * kStateSize;

  // Within an input tile: parameters, then states, then state gradients.
  auto params_of = [&](T* tile) { return tile; };
  auto states_of = [&](T* tile) { return tile + kItems * Tile::param_stride; };
  auto grad_states_of = [&](T* tile) { return tile + kItems * (Tile::param_stride + Tile::state_stride); };

  // Tile `order` counts from the last joints backwards.
  auto first_joint = [&](int order) { return (tiles - 1 - order) * Tile::joints; };
  auto prefetch = [&](int order) {
    const int j0 = first_joint(order);
    const int tile_joints = min(Tile::joints, J - j0);
    T* tile = input_tile(order);
    tile_load_async(params_of(tile), Tile::param_stride,
                    p.joint_parameters + (first_item * J + j0) * kJointParameters,
                    param_row, items, tile_joints * kJointParameters);
    tile_load_async(states_of(tile), Tile::state_stride,
                    p.skeleton_state + (first_item * J + j0) * kStateSize,
                    state_row, items, tile_joints * kStateSize);
    tile_load_async(grad_states_of(tile), Tile::state_stride,
                    p.grad_skeleton_state + (first_item * J + j0) * kStateSize,
                    state_row, items, tile_joints * kStateSize);
    skeleton_load_async(skeleton_tile(order), p.offsets, p.pre_rotations, j0, tile_joints);
    __pipeline_commit();
  };

  prefetch(0);
  for (int order = 0; order < tiles; ++order) {
    const int j0 = first_joint(order);
    const int tile_joints = min(Tile::joints, J - j0);
    if (order > 0) {
      __syncthreads();  // the previous tile's store has read grad_tile
    }
    // The wrenches children in later tiles accumulated in global memory; rows
    // no such child wrote are not read (children in this tile add into the
    // shared row, and the kHasChildren flag skips rows of childless joints).
    tile_load_async_if(grad_tile, Tile::param_stride, p.out + (first_item * J + j0) * kJointParameters,
                       param_row, items, tile_joints * kJointParameters,
                       [&](int c) { return (topology[j0 + c / kJointParameters] & kChildInLaterTile) != 0; });
    __pipeline_commit();
    if (order + 1 < tiles) {
      prefetch(order + 1);
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    __syncthreads();
    if (tid < tile_joints) {
      normalize_quaternion_at(skeleton_tile(order) + 7 * tid + 3);
    }
    __syncthreads();
    if (tid < items) {
      T* const tile = input_tile(order);
      const T* my_params = params_of(tile) + tid * Tile::param_stride;
      const T* my_states = states_of(tile) + tid * Tile::state_stride;
      const T* my_grad_states = grad_states_of(tile) + tid * Tile::state_stride;
      T* const my_tile = grad_tile + tid * Tile::param_stride;
      const T* skeleton = skeleton_tile(order);
      for (int k = tile_joints - 1; k >= 0; --k) {
        const int j = j0 + k;
        const int32_t code = topology[j];
        const Transform<T> global = load_state(my_states + k * kStateSize);
        Wrench<T> subtree = state_gradient_wrench(global, my_grad_states + k * kStateSize);
        if (code & kHasChildren) {
          subtree = subtree + load_wrench(my_tile + k * kJointParameters);
        }
        const Wrench<T> up = joint_backward(
            my_params + k * kJointParameters, load_vec3(skeleton + 7 * k),
            load_quat(skeleton + 7 * k + 3), global, subtree, my_tile + k * kJointParameters);
        const int parent = topology_parent(code);
        if (parent >= 0) {
          T* target = parent >= j0 ? my_tile + (parent - j0) * kJointParameters
                                   : my_grads + parent * kJointParameters;
          if (code & kFirstChild) {
            store_wrench(up, target);
          } else {
            add_wrench(up, target);
          }
        }
      }
    }
    __syncthreads();
    tile_store(grad_tile, Tile::param_stride, p.out + (first_item * J + j0) * kJointParameters,
               param_row, items, tile_joints * kJointParameters);
  }
}

std::vector<int32_t> backward_topology(const std::vector<int32_t>& codes, int tile_joints) {
  std::vector<int32_t> out = codes;
  std::vector<int64_t> last_child(codes.size(), -1);
  for (size_t j = 0; j < codes.size(); ++j) {
    const int parent = topology_parent(codes[j]);
    if (parent >= 0) {
      last_child[size_t(parent)] = int64_t(j);  // increasing j: ends at the highest-index child
    }
  }
  for (size_t j = 0; j < codes.size(); ++j) {
    if (last_child[j] >= 0 && last_child[j] / tile_joints != int64_t(j) / tile_joints) {
      out[j] |= kChildInLaterTile;
    }
  }
  return out;
}

template <typename T>
FkParams<T> make_params(const FkForwardArgs& args, const std::vector<int32_t>& topology, Tensor& topology_storage) {
  FkParams<T> p{};
  p.joint_parameters = static_cast<const T*>(args.joint_parameters.const_data_ptr());
  p.offsets = static_cast<const T*>(args.offsets.const_data_ptr());
  p.pre_rotations = static_cast<const T*>(args.pre_rotations.const_data_ptr());
  p.batch = args.batch;
  p.joints = int(args.joints);
  make_topology_param(topology, args.joint_parameters, p.topology, topology_storage);
  return p;
}

template <typename T, typename Kernel>
void launch(Kernel kernel, const FkParams<T>& p, size_t shared, const Tensor& on) {
  MOMENTUM_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared)),
      kOp);
  const unsigned blocks = unsigned((p.batch + kItems - 1) / kItems);
  kernel<<<blocks, kThreads, shared, current_cuda_stream(on)>>>(p);
  MOMENTUM_CHECK_LAUNCH(kOp);
}

Tensor fk_forward_cuda(
    Tensor joint_parameters,
    Tensor parents,
    Tensor offsets,
    Tensor pre_rotations) {
  const FkForwardArgs args =
      check_fk_forward(joint_parameters, parents, offsets, pre_rotations);
  const torch::stable::accelerator::DeviceGuard guard(joint_parameters.get_device_index());
  Tensor out = torch::stable::new_empty(
      args.joint_parameters, concat(args.batch_shape, {args.joints, kStateSize}));
  if (args.batch == 0 || args.joints == 0) {
    return out;
  }
  Tensor topology_storage;
  auto run = [&](auto zero) {
    using T = decltype(zero);
    FkParams<T> p = make_params<T>(args, args.topology, topology_storage);
    p.out = static_cast<T*>(out.mutable_data_ptr());
    launch(fk_forward_kernel<T>, p, Tiling<T, false>::shared_bytes, out);
  };
  dispatch_floating(args.joint_parameters.scalar_type(), run);
  return out;
}

std::tuple<Tensor, Tensor> fk_backward_cuda(
    Tensor grad_skeleton_state,
    Tensor joint_parameters,
    Tensor parents,
    Tensor offsets,
    Tensor pre_rotations,
    Tensor skeleton_state) {
  const FkBackwardArgs args = check_fk_backward(
      grad_skeleton_state, joint_parameters, parents, offsets, pre_rotations,
      skeleton_state);
  const torch::stable::accelerator::DeviceGuard guard(joint_parameters.get_device_index());
  Tensor grad_jp = torch::stable::new_empty(
      args.joint_parameters, concat(args.batch_shape, {args.joints, kJointParameters}));
  if (args.batch > 0 && args.joints > 0) {
    Tensor topology_storage;
    auto run = [&](auto zero) {
      using T = decltype(zero);
      const std::vector<int32_t> topology = backward_topology(args.topology, Tiling<T, true>::joints);
      FkParams<T> p = make_params<T>(args, topology, topology_storage);
      p.skeleton_state = static_cast<const T*>(args.skeleton_state.const_data_ptr());
      p.grad_skeleton_state =
          static_cast<const T*>(args.grad_skeleton_state.const_data_ptr());
      p.out = static_cast<T*>(grad_jp.mutable_data_ptr());
      launch(fk_backward_kernel<T>, p, Tiling<T, true>::shared_bytes, grad_jp);
    };
    dispatch_floating(args.joint_parameters.scalar_type(), run);
  }
  return {grad_jp, offsets_gradient(grad_jp, args.batch, args.joints)};
}

}  // namespace
}  // namespace momentum_ops

STABLE_TORCH_LIBRARY_IMPL(momentum, CUDA, m) {
  m.impl("joint_parameters_to_skeleton_state", TORCH_BOX(&momentum_ops::fk_forward_cuda));
  m.impl(
      "joint_parameters_to_skeleton_state_backward",
      TORCH_BOX(&momentum_ops::fk_backward_cuda));
}
