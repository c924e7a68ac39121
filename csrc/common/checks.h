// Host-side argument checks shared by every op's CPU and CUDA entry points.
// Errors name the op and the argument, and say what was expected and found.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace momentum_ops {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream message;
  (message << ... << args);
  throw std::runtime_error(message.str());
}

#define MOMENTUM_CHECK(cond, ...)      \
  do {                                 \
    if (!(cond)) {                     \
      ::momentum_ops::fail(__VA_ARGS__); \
    }                                  \
  } while (0)

std::string shape_string(const Tensor& t);
// An argument passed as None arrives as an undefined tensor; every check
// below starts here, so None gets "<name> is None" instead of a dtype error.
void check_defined(const char* op, const char* name, const Tensor& t);
// A finite scalar option >= minimum (> minimum when `strict`).
void check_option(const char* op, const char* name, double value, double minimum, bool strict);
std::string dtype_string(ScalarType t);
std::string device_string(const Tensor& t);

// float32 or float64.
void check_floating(const char* op, const char* name, const Tensor& t);
// `t` has the dtype and device of `ref` (device only: `ref_name` is the reference).
void check_like(
    const char* op,
    const char* name,
    const Tensor& t,
    const char* ref_name,
    const Tensor& ref);
void check_same_device(
    const char* op,
    const char* name,
    const Tensor& t,
    const char* ref_name,
    const Tensor& ref);
// Exactly this shape; -1 leaves a size free.
void check_shape(
    const char* op,
    const char* name,
    const Tensor& t,
    const std::vector<int64_t>& expected,
    const char* expected_text);
// At least `trailing.size()` dims ending in `trailing` (-1 leaves one free);
// returns the product of the leading (batch) sizes.
int64_t check_batched_shape(
    const char* op,
    const char* name,
    const Tensor& t,
    const std::vector<int64_t>& trailing,
    const char* expected_text);
// The batch sizes of t (all dims but the last `trailing_dims`).
std::vector<int64_t> batch_sizes(const Tensor& t, int64_t trailing_dims);
std::vector<int64_t> concat(std::vector<int64_t> a, const std::vector<int64_t>& b);

// int32 or int64 indices as an int64 CPU vector (copying from the device if
// needed: only small skeleton-sized tensors go through here).
std::vector<int64_t> integer_values(
    const char* op,
    const char* name,
    const Tensor& t);

// Validates `parents` ([J], -1 or an earlier joint) and encodes it for the
// kernels (see math.h: topology codes).
std::vector<int32_t> skeleton_topology(
    const char* op,
    const Tensor& parents,
    int64_t joints);

// A contiguous tensor (the input itself when it already is).
Tensor as_contiguous(const Tensor& t);

// Calls f(T()) with T = float or double, the dtype of a checked floating tensor.
template <typename F>
void dispatch_floating(ScalarType dtype, F&& f) {
  if (dtype == ScalarType::Float) {
    f(float(0));
  } else {
    f(double(0));
  }
}

}  // namespace momentum_ops
