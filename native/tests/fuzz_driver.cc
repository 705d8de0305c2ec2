// Standalone driver for a libFuzzer target (LLVMFuzzerTestOneInput) where libFuzzer is not
// available (GCC): runs the input files named on the command line, or -runs=N random inputs made
// from -seed=S. Before each random input it writes the input to ./fuzz-last-input, so a crash can
// be replayed with `fuzz_segment fuzz-last-input` (under gdb, say).
//
// The random inputs follow fuzz_segment.cc's format: [u32 offset][u8 length][bytes]... '!' ops...,
// with offsets biased towards the segment's header and tables (the first 160 KiB), where a
// scribble matters most.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<uint8_t> RandomInput(std::mt19937_64& rng) {
  std::vector<uint8_t> in;
  auto byte = [&]() -> uint8_t {
    switch (rng() % 6) {
      case 0: return 0;
      case 1: return 0xff;
      case 2: return static_cast<uint8_t>(rng() % 4);
      default: return static_cast<uint8_t>(rng());
    }
  };
  int writes = static_cast<int>(rng() % 5);
  for (int w = 0; w < writes; ++w) {
    uint32_t offset = rng() % 4 ? static_cast<uint32_t>(rng() % (160u << 10)) : static_cast<uint32_t>(rng());
    if ((offset & 0xff) == '!') offset ^= 1;  // '!' at a record start ends the writes early
    uint8_t length = static_cast<uint8_t>(rng() % 8);
    for (int k = 0; k < 4; ++k) in.push_back(static_cast<uint8_t>(offset >> (8 * k)));
    in.push_back(length);
    for (int k = 0; k <= length % 16; ++k) in.push_back(byte());
  }
  in.push_back('!');
  int ops = 1 + static_cast<int>(rng() % 24);
  for (int k = 0; k < ops; ++k) in.push_back(static_cast<uint8_t>(rng()));
  return in;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t runs = 1000, seed = 1;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "-runs=", 6) == 0) {
      runs = std::strtoull(argv[i] + 6, nullptr, 10);
    } else if (std::strncmp(argv[i], "-seed=", 6) == 0) {
      seed = std::strtoull(argv[i] + 6, nullptr, 10);
    } else if (argv[i][0] == '-') {
      // libFuzzer options (-max_total_time=...) mean nothing here.
    } else {
      files.push_back(argv[i]);
    }
  }
  if (!files.empty()) {
    for (const std::string& file : files) {
      std::ifstream f(file, std::ios::binary);
      std::vector<uint8_t> in((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      std::printf("running %s (%zu bytes)\n", file.c_str(), in.size());
      LLVMFuzzerTestOneInput(in.data(), in.size());
    }
    std::printf("%zu passed, 0 failed\n", files.size());
    return 0;
  }
  std::mt19937_64 rng(seed);
  for (uint64_t run = 0; run < runs; ++run) {
    std::vector<uint8_t> in = RandomInput(rng);
    if (FILE* f = std::fopen("fuzz-last-input", "wb")) {
      std::fwrite(in.data(), 1, in.size(), f);
      std::fclose(f);
    }
    LLVMFuzzerTestOneInput(in.data(), in.size());
    if ((run + 1) % 1000 == 0) std::printf("%llu runs\n", static_cast<unsigned long long>(run + 1));
  }
  std::printf("random inputs: %llu runs, seed %llu, no crash\n", static_cast<unsigned long long>(runs),
              static_cast<unsigned long long>(seed));
  return 0;
}
