// CUDA kernels of inverse kinematics. One thread block solves one problem at a
// time with the solver of ik_solver.h, its loops shared by the block's threads
// (BlockExec); a persistent grid of blocks walks the batch, each block with its
// own scratch in global memory (L1/L2-resident for typical sizes). All
// iterations run inside the kernel: no host synchronisation, one graph node.
// The index arrays travel by value in the kernel parameters when they fit.
#include "ik.h"

#include "../common/cuda_utils.cuh"

#include <torch/csrc/stable/library.h>

#include <algorithm>
#include <cstring>
#include <tuple>

namespace momentum_ops {
namespace {

constexpr const char* kSolve = "ik_solve";
constexpr const char* kBackward = "ik_solve_backward";
constexpr const char* kResiduals = "position_residuals_and_jacobian";
constexpr int kIkThreads = 128;
// Registers are capped so that 8 blocks fit on a multiprocessor (64 per thread):
// a few spills cost less than the eighth of the blocks 72 registers would lose.
constexpr int kIkBlocksPerMultiprocessor = 8;
constexpr int kIkInlineWords = 6144;  // 24 KB of index arrays by value
constexpr int64_t kMaxTotalScratchBytes = int64_t(1) << 30;  // all blocks' scratch together

// The solver's loops, shared by the threads of one block.
struct BlockExec {
  template <typename F>
  __device__ void for_each(int64_t n, F&& f) const {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) f(i);
  }
  // f(a, b) for every a >= b in [0, n), the pairs of a packed triangle spread over the threads.
  template <typename F>
  __device__ void for_each_pair(int n, F&& f) const {
    for_each(int64_t(n) * (n + 1) / 2, [&](int64_t e) {
      int64_t a, b;
      packed_entry(e, &a, &b);
      f(int(a), int(b));
    });
  }
  __device__ void sync() const { __syncthreads(); }
  __device__ bool leader() const { return threadIdx.x == 0; }
  __device__ int append(int* counter) const { return atomicAdd(counter, 1); }

  template <typename U>
  __device__ U sum(U partial) const {
    return reduce(partial, [](U a, U b) { return a + b; });
  }
  template <typename U>
  __device__ U max(U partial) const {
    return reduce(partial, [](U a, U b) { return a > b ? a : b; });
  }

  // Every thread gets the block's reduction.
  template <typename U, typename Op>
  __device__ U reduce(U value, Op op) const {
    __shared__ U lanes[32];
    __shared__ U result;
    for (int offset = 16; offset > 0; offset /= 2) {
      value = op(value, __shfl_down_sync(0xffffffffu, value, offset));
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) lanes[warp] = value;
    __syncthreads();
    if (threadIdx.x == 0) {
      U total = lanes[0];
      for (int w = 1; w < int(blockDim.x + 31) / 32; ++w) total = op(total, lanes[w]);
      result = total;
    }
    __syncthreads();
    const U total = result;
    __syncthreads();
    return total;
  }
};

struct IndexParam {
  const int32_t* device_words;  // null when `words` holds them
  int32_t words[kIkInlineWords];
  __device__ const int32_t* get() const { return device_words != nullptr ? device_words : words; }
};

template <typename T>
struct IkKernelParams {
  IkModel<T> model;  // index pointers are set in the kernel
  IkIndexOffsets offsets;
  IkBatch<T> batch_data;
  int64_t batch;
  T* scratch;
  int64_t scratch_stride;
  // outputs
  T* solution;
  int32_t* iterations;
  T* energy;
  const T* grad_solution;  // backward
  T* grad_position_targets;
  T* grad_position_weights;
  T* grad_orientation_targets;
  T* grad_orientation_weights;
  T* grad_regularization_target;
  T* residuals;  // position_residuals_and_jacobian
  T* jacobian;
  bool shared_hessian;  // H's working copy in dynamic shared memory
  IndexParam index;
};

template <typename T>
__device__ IkModel<T> kernel_model(const IkKernelParams<T>& p) {
  IkModel<T> model = p.model;
  model.set_index(p.index.get(), p.offsets);
  return model;
}

enum class Task { Solve, Backward, Residuals };

template <typename T, Task kTask>
__global__ void __launch_bounds__(kIkThreads, kIkBlocksPerMultiprocessor) ik_kernel(const __grid_constant__ IkKernelParams<T> p) {
  __shared__ IkControl<T> control;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  const IkModel<T> model = kernel_model(p);
  const BlockExec exec;
  T* scratch = p.scratch + blockIdx.x * p.scratch_stride;
  T* fast_hessian = p.shared_hessian ? reinterpret_cast<T*>(shared_bytes) : nullptr;
  const int64_t P = model.params, C = model.positions, Co = model.orientations;
  for (int64_t b = blockIdx.x; b < p.batch; b += gridDim.x) {
    const IkProblem<T> problem = p.batch_data.problem(b);
    IkSolver<T, BlockExec> solver(exec, model, problem, scratch, &control, fast_hessian);
    if constexpr (kTask == Task::Solve) {
      solver.solve(p.solution + b * P, p.iterations + b, p.energy + b);
    } else if constexpr (kTask == Task::Backward) {
      solver.implicit_backward(problem.theta_init, p.grad_solution + b * P, p.grad_position_targets + b * C * 3,
                               p.grad_position_weights + b * C, p.grad_orientation_targets + b * Co * 4,
                               p.grad_orientation_weights + b * Co, p.grad_regularization_target + b * P);
    } else {
      solver.position_residuals_and_jacobian(problem.theta_init, p.residuals + b * C * 3,
                                             p.jacobian + b * C * 3 * P);
    }
    __syncthreads();
  }
}

// Sets up the parameters and the scratch, then runs the task.
template <typename T, Task kTask>
void launch(const char* op, const IkArgs& args, const IkOptions& options, const IkProblemTensors& t,
            IkKernelParams<T>& p, const Tensor& like) {
  if (args.batch == 0) {
    return;
  }
  const int device = like.get_device_index();
  const cudaStream_t stream = current_cuda_stream(like);
  p.model = ik_model<T>(args, options);
  p.offsets = args.offsets_of;
  p.batch_data = ik_batch<T>(args, t);
  p.batch = args.batch;
  Tensor index_storage;
  p.index.device_words = nullptr;
  if (args.index.size() <= size_t(kIkInlineWords)) {
    std::memcpy(p.index.words, args.index.data(), args.index.size() * sizeof(int32_t));
  } else {
    const int64_t n = int64_t(args.index.size());
    Tensor host = torch::stable::empty({n}, ScalarType::Int, std::nullopt,
                                       torch::stable::Device(torch::headeronly::DeviceType::CPU));
    std::memcpy(host.mutable_data_ptr(), args.index.data(), args.index.size() * sizeof(int32_t));
    index_storage = torch::stable::to(host, like.device());
    p.index.device_words = static_cast<const int32_t*>(index_storage.const_data_ptr());
  }
  const IkScratchLayout layout = args.layout();
  const int64_t per_problem = std::max<int64_t>(layout.total, 2);
  // The Cholesky factorisation works on H's packed triangle: in shared memory
  // when it fits (on an H100's 227 KiB: Pa up to ~330 in float32, ~230 in float64), else in the
  // block's global scratch, where L2 thrashes for large batches.
  int shared_limit = 0;
  MOMENTUM_CUDA_CHECK(cudaDeviceGetAttribute(&shared_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), op);
  const size_t hessian_bytes = size_t(args.hessian_active) * (args.hessian_active + 1) / 2 * sizeof(T);
  p.shared_hessian = args.hessian_active > 0 && hessian_bytes + 2048 <= size_t(shared_limit);
  const size_t shared = p.shared_hessian ? hessian_bytes : 0;
  MOMENTUM_CUDA_CHECK(
      cudaFuncSetAttribute(ik_kernel<T, kTask>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared)), op);
  // The persistent grid is as many blocks as fit on the device at once (by
  // registers and shared memory): one more, and the blocks of a second wave
  // start only when a first-wave block has walked its whole share of the batch.
  int per_multiprocessor = 0;
  MOMENTUM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_multiprocessor, ik_kernel<T, kTask>,
                                                                    kIkThreads, shared), op);
  int64_t blocks = std::min<int64_t>(args.batch,
                                     int64_t(multiprocessor_count(device)) * std::max(per_multiprocessor, 1));
  blocks = std::max<int64_t>(1, std::min<int64_t>(blocks, kMaxTotalScratchBytes / (per_problem * int64_t(sizeof(T)))));
  Tensor scratch = torch::stable::new_empty(like, {blocks * per_problem});
  p.scratch = static_cast<T*>(scratch.mutable_data_ptr());
  p.scratch_stride = per_problem;
  ik_kernel<T, kTask><<<unsigned(blocks), kIkThreads, shared, stream>>>(p);
  MOMENTUM_CHECK_LAUNCH(op);
}

std::tuple<Tensor, Tensor, Tensor> ik_solve_cuda(MOMENTUM_IK_SOLVE_PARAMS) {
  IkSolveCall call = prepare_ik_solve(MOMENTUM_IK_SOLVE_ARGS);
  const Tensor& like = call.problems.model_parameters;
  const torch::stable::accelerator::DeviceGuard guard(like.get_device_index());
  dispatch_floating(call.args.dtype, [&](auto zero) {
    using T = decltype(zero);
    IkKernelParams<T> p{};
    p.solution = static_cast<T*>(call.solution.mutable_data_ptr());
    p.iterations = static_cast<int32_t*>(call.iterations.mutable_data_ptr());
    p.energy = static_cast<T*>(call.energy.mutable_data_ptr());
    launch<T, Task::Solve>(kSolve, call.args, call.options, call.problems, p, like);
  });
  return {call.solution, call.iterations, call.energy};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> ik_solve_backward_cuda(MOMENTUM_IK_BACKWARD_PARAMS) {
  IkBackwardCall call = prepare_ik_backward(MOMENTUM_IK_BACKWARD_ARGS);
  const Tensor& like = call.problems.model_parameters;
  const torch::stable::accelerator::DeviceGuard guard(like.get_device_index());
  dispatch_floating(call.args.dtype, [&](auto zero) {
    using T = decltype(zero);
    IkKernelParams<T> p{};
    auto out = [](Tensor& x) { return static_cast<T*>(x.mutable_data_ptr()); };
    p.grad_solution = data_of<T>(call.grad_solution);
    p.grad_position_targets = out(call.grad_position_targets);
    p.grad_position_weights = out(call.grad_position_weights);
    p.grad_orientation_targets = out(call.grad_orientation_targets);
    p.grad_orientation_weights = out(call.grad_orientation_weights);
    p.grad_regularization_target = out(call.grad_regularization_target);
    launch<T, Task::Backward>(kBackward, call.args, call.options, call.problems, p, like);
  });
  return {call.grad_position_targets, call.grad_position_weights, call.grad_orientation_targets,
          call.grad_orientation_weights, call.grad_regularization_target};
}

std::tuple<Tensor, Tensor> residuals_cuda(MOMENTUM_IK_RESIDUALS_PARAMS) {
  IkResidualsCall call = prepare_residuals(MOMENTUM_IK_RESIDUALS_ARGS);
  const Tensor& like = call.problems.model_parameters;
  const torch::stable::accelerator::DeviceGuard guard(like.get_device_index());
  dispatch_floating(call.args.dtype, [&](auto zero) {
    using T = decltype(zero);
    IkKernelParams<T> p{};
    p.residuals = static_cast<T*>(call.residuals.mutable_data_ptr());
    p.jacobian = static_cast<T*>(call.jacobian.mutable_data_ptr());
    launch<T, Task::Residuals>(kResiduals, call.args, IkOptions{}, call.problems, p, like);
  });
  return {call.residuals, call.jacobian};
}

}  // namespace
}  // namespace momentum_ops

STABLE_TORCH_LIBRARY_IMPL(momentum, CUDA, m) {
  m.impl("ik_solve", TORCH_BOX(&momentum_ops::ik_solve_cuda));
  m.impl("ik_solve_backward", TORCH_BOX(&momentum_ops::ik_solve_backward_cuda));
  m.impl("position_residuals_and_jacobian", TORCH_BOX(&momentum_ops::residuals_cuda));
}
