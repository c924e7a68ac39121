// CUDA helpers shared by the kernels: the current stream, launch checks, and
// block-cooperative copies between strided global rows and shared memory.
#pragma once

#include "checks.h"

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>

#include <cuda_pipeline_primitives.h>
#include <cuda_runtime.h>

#include <cstring>

namespace momentum_ops {

inline cudaStream_t current_cuda_stream(const Tensor& on) {
  void* stream = nullptr;
  const int32_t device = on.get_device_index();
  MOMENTUM_CHECK(
      aoti_torch_get_current_cuda_stream(device, &stream) == AOTI_TORCH_SUCCESS,
      "momentum_ops: could not get the current CUDA stream of device ", device);
  return static_cast<cudaStream_t>(stream);
}

#define MOMENTUM_CUDA_CHECK(expr, op)                                          \
  do {                                                                         \
    const cudaError_t momentum_err = (expr);                                   \
    MOMENTUM_CHECK(                                                            \
        momentum_err == cudaSuccess, op, ": CUDA error: ",                     \
        cudaGetErrorString(momentum_err), " (", #expr, ")");                  \
  } while (0)

// Call right after a <<<...>>> launch.
#define MOMENTUM_CHECK_LAUNCH(op) MOMENTUM_CUDA_CHECK(cudaGetLastError(), op)

inline int multiprocessor_count(int device) {
  int count = 0;
  MOMENTUM_CUDA_CHECK(
      cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device),
      "momentum_ops");
  return count;
}

// Topology codes travel by value in the kernel's parameters (no copy, no
// sync, CUDA-graph safe) up to kInlineJoints joints; larger skeletons get a
// device copy made on the current stream.
constexpr int kInlineJoints = 2048;

struct TopologyParam {
  const int32_t* device_codes;  // null when `codes` holds them
  int32_t codes[kInlineJoints];

  __device__ __forceinline__ const int32_t* get() const {
    return device_codes != nullptr ? device_codes : codes;
  }
};

// Fills `param`; `storage` keeps a device copy alive for large skeletons.
inline void make_topology_param(
    const std::vector<int32_t>& codes,
    const Tensor& like,
    TopologyParam& param,
    Tensor& storage) {
  param.device_codes = nullptr;
  if (codes.size() <= size_t(kInlineJoints)) {
    std::memcpy(param.codes, codes.data(), codes.size() * sizeof(int32_t));
    return;
  }
  const int64_t n = int64_t(codes.size());
  Tensor host = torch::stable::empty(
      {n}, ScalarType::Int, std::nullopt,
      torch::stable::Device(torch::headeronly::DeviceType::CPU));
  std::memcpy(host.mutable_data_ptr(), codes.data(), codes.size() * sizeof(int32_t));
  storage = torch::stable::to(host, like.device());
  param.device_codes = static_cast<const int32_t*>(storage.const_data_ptr());
}

// tile_load_async (below) for only the columns `keep(c)` accepts, leaving the
// others as they were: for rows whose other columns hold nothing written.
template <typename T, typename Keep>
__device__ __forceinline__ void tile_load_async_if(
    T* tile,
    int tile_stride,
    const T* __restrict__ global,
    int64_t global_stride,
    int rows,
    int width,
    Keep keep) {
  for (int f = threadIdx.x; f < rows * width; f += blockDim.x) {
    const int i = f / width;
    const int c = f - i * width;
    if (keep(c)) {
      __pipeline_memcpy_async(tile + i * tile_stride + c, global + i * global_stride + c, sizeof(T));
    }
  }
}

// Starts asynchronous copies (cp.async) of `rows` rows of `width` elements
// from global memory into a shared-memory tile: row i starts at
// global + i * global_stride and at tile + i * tile_stride. Every thread of
// the block takes part; the copies are in flight together and do not tie up
// registers. The caller commits them (__pipeline_commit) and waits
// (__pipeline_wait_prior + __syncthreads) before reading the tile.
template <typename T>
__device__ __forceinline__ void tile_load_async(
    T* tile,
    int tile_stride,
    const T* __restrict__ global,
    int64_t global_stride,
    int rows,
    int width) {
  tile_load_async_if(tile, tile_stride, global, global_stride, rows, width, [](int) { return true; });
}

// Writes a shared-memory tile back to global rows (coalesced along each row).
template <typename T>
__device__ __forceinline__ void tile_store(
    const T* tile,
    int tile_stride,
    T* __restrict__ global,
    int64_t global_stride,
    int rows,
    int width) {
  for (int f = threadIdx.x; f < rows * width; f += blockDim.x) {
    const int i = f / width;
    const int c = f - i * width;
    global[i * global_stride + c] = tile[i * tile_stride + c];
  }
}

}  // namespace momentum_ops
