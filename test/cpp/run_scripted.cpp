// usage: run_scripted <momentum_ops library> <module.pt> <output.bin> [device]
// Runs module.forward(module.example_input) and writes the result as raw
// float64 values, so the Python test can compare it with its own run.
#include <torch/script.h>

#include <dlfcn.h>

#include <fstream>
#include <iostream>

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: run_scripted <library> <module.pt> <output.bin> [device]\n";
    return 2;
  }
  // Loading the library runs its static registrations of torch.ops.momentum.*.
  if (dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    std::cerr << "dlopen failed: " << dlerror() << "\n";
    return 1;
  }
  const torch::Device device(argc > 4 ? argv[4] : "cpu");
  torch::jit::Module module = torch::jit::load(argv[2], device);
  const torch::Tensor input = module.attr("example_input").toTensor().to(device);
  torch::NoGradGuard no_grad;
  const torch::Tensor output =
      module.forward({input}).toTensor().to(torch::kCPU, torch::kDouble).contiguous();
  std::ofstream out(argv[3], std::ios::binary);
  out.write(reinterpret_cast<const char*>(output.data_ptr<double>()),
            std::streamsize(output.numel() * sizeof(double)));
  std::cout << "output shape " << output.sizes() << "\n";
  return 0;
}
