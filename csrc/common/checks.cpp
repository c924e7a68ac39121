#include "checks.h"

#include "math.h"

#include <torch/csrc/stable/device.h>

#include <cmath>

namespace momentum_ops {

using torch::headeronly::DeviceType;

std::string shape_string(const Tensor& t) {
  std::ostringstream out;
  out << "[";
  for (int64_t d = 0; d < t.dim(); ++d) {
    out << (d ? ", " : "") << t.size(d);
  }
  out << "]";
  return out.str();
}

std::string dtype_string(ScalarType t) {
  switch (t) {
    case ScalarType::Float:
      return "float32";
    case ScalarType::Double:
      return "float64";
    case ScalarType::Half:
      return "float16";
    case ScalarType::BFloat16:
      return "bfloat16";
    case ScalarType::Int:
      return "int32";
    case ScalarType::Long:
      return "int64";
    case ScalarType::Short:
      return "int16";
    case ScalarType::Char:
      return "int8";
    case ScalarType::Byte:
      return "uint8";
    case ScalarType::Bool:
      return "bool";
    default:
      return torch::headeronly::toString(t);
  }
}

std::string device_string(const Tensor& t) {
  const DeviceType type = t.device().type();
  if (type == DeviceType::CPU) {
    return "cpu";
  }
  if (type == DeviceType::Meta) {
    return "meta";
  }
  std::ostringstream out;
  out << (type == DeviceType::CUDA ? "cuda" : "device") << ":" << int(t.get_device_index());
  return out.str();
}

void check_defined(const char* op, const char* name, const Tensor& t) {
  MOMENTUM_CHECK(t.defined(), op, ": ", name, " is None; a tensor is required");
}

void check_option(const char* op, const char* name, double value, double minimum, bool strict) {
  MOMENTUM_CHECK(
      std::isfinite(value) && (strict ? value > minimum : value >= minimum), op, ": ", name,
      " must be a finite number ", (strict ? "> " : ">= "), minimum, ", got ", value);
}

void check_floating(const char* op, const char* name, const Tensor& t) {
  check_defined(op, name, t);
  const ScalarType dtype = t.scalar_type();
  MOMENTUM_CHECK(
      dtype == ScalarType::Float || dtype == ScalarType::Double,
      op, ": ", name, " must be float32 or float64, got ", dtype_string(dtype));
}

void check_same_device(
    const char* op,
    const char* name,
    const Tensor& t,
    const char* ref_name,
    const Tensor& ref) {
  check_defined(op, name, t);
  const bool same = t.device().type() == ref.device().type() &&
      (t.is_cpu() || t.get_device_index() == ref.get_device_index());
  MOMENTUM_CHECK(
      same, op, ": ", name, " is on ", device_string(t), " but ", ref_name,
      " is on ", device_string(ref), "; they must be on the same device");
}

void check_like(
    const char* op,
    const char* name,
    const Tensor& t,
    const char* ref_name,
    const Tensor& ref) {
  check_defined(op, name, t);
  MOMENTUM_CHECK(
      t.scalar_type() == ref.scalar_type(), op, ": ", name, " is ",
      dtype_string(t.scalar_type()), " but ", ref_name, " is ",
      dtype_string(ref.scalar_type()),
      "; all floating inputs must share one dtype");
  check_same_device(op, name, t, ref_name, ref);
}

void check_shape(
    const char* op,
    const char* name,
    const Tensor& t,
    const std::vector<int64_t>& expected,
    const char* expected_text) {
  check_defined(op, name, t);
  bool ok = t.dim() == int64_t(expected.size());
  for (size_t d = 0; ok && d < expected.size(); ++d) {
    ok = expected[d] < 0 || t.size(int64_t(d)) == expected[d];
  }
  MOMENTUM_CHECK(
      ok, op, ": ", name, " must have shape ", expected_text, ", got ",
      shape_string(t));
}

int64_t check_batched_shape(
    const char* op,
    const char* name,
    const Tensor& t,
    const std::vector<int64_t>& trailing,
    const char* expected_text) {
  check_defined(op, name, t);
  const int64_t n = int64_t(trailing.size());
  bool ok = t.dim() >= n;
  for (int64_t d = 0; ok && d < n; ++d) {
    ok = trailing[d] < 0 || t.size(t.dim() - n + d) == trailing[d];
  }
  MOMENTUM_CHECK(
      ok, op, ": ", name, " must have shape ", expected_text, ", got ",
      shape_string(t));
  int64_t batch = 1;
  for (int64_t d = 0; d < t.dim() - n; ++d) {
    batch *= t.size(d);
  }
  return batch;
}

std::vector<int64_t> batch_sizes(const Tensor& t, int64_t trailing_dims) {
  std::vector<int64_t> sizes;
  for (int64_t d = 0; d < t.dim() - trailing_dims; ++d) {
    sizes.push_back(t.size(d));
  }
  return sizes;
}

std::vector<int64_t> concat(std::vector<int64_t> a, const std::vector<int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<int64_t> integer_values(
    const char* op,
    const char* name,
    const Tensor& t) {
  check_defined(op, name, t);
  const ScalarType dtype = t.scalar_type();
  MOMENTUM_CHECK(
      dtype == ScalarType::Long || dtype == ScalarType::Int, op, ": ", name,
      " must be int32 or int64, got ", dtype_string(dtype));
  MOMENTUM_CHECK(
      t.is_cpu() || t.is_cuda(), op, ": ", name, " is on ", device_string(t),
      "; index tensors must hold data (cpu or cuda)");
  Tensor host = t.is_cpu()
      ? as_contiguous(t)
      : as_contiguous(torch::stable::to(t, torch::stable::Device(DeviceType::CPU)));
  std::vector<int64_t> values(size_t(host.numel()));
  if (dtype == ScalarType::Long) {
    const auto* p = static_cast<const int64_t*>(host.const_data_ptr());
    values.assign(p, p + host.numel());
  } else {
    const auto* p = static_cast<const int32_t*>(host.const_data_ptr());
    values.assign(p, p + host.numel());
  }
  return values;
}

std::vector<int32_t> skeleton_topology(
    const char* op,
    const Tensor& parents,
    int64_t joints) {
  check_shape(op, "parents", parents, {joints}, "[J] (one entry per joint)");
  MOMENTUM_CHECK(
      joints <= kMaxJoints, op, ": at most ", kMaxJoints, " joints, got ",
      joints);
  const std::vector<int64_t> parent = integer_values(op, "parents", parents);
  std::vector<int32_t> codes(size_t(joints), 0);
  for (int64_t j = joints - 1; j >= 0; --j) {
    const int64_t p = parent[size_t(j)];
    MOMENTUM_CHECK(
        p >= -1 && p < joints, op, ": parents[", j, "] = ", p,
        " is out of range; a parent is -1 (a root) or a joint index in [0, ",
        joints, ")");
    MOMENTUM_CHECK(
        p < j, op, ": parents[", j, "] = ", p,
        " does not come before joint ", j,
        "; joints must be ordered parents-first (parents[j] < j)");
    codes[size_t(j)] |= int32_t(p + 1);
    if (p >= 0) {
      // Scanning from the last joint, the first child seen has the highest index.
      if (!(codes[size_t(p)] & kHasChildren)) {
        codes[size_t(j)] |= kFirstChild;
      }
      codes[size_t(p)] |= kHasChildren;
    }
  }
  return codes;
}

Tensor as_contiguous(const Tensor& t) {
  return t.is_contiguous() ? t : torch::stable::contiguous(t);
}

}  // namespace momentum_ops
