// One clock for every process on the machine: CLOCK_MONOTONIC is system-wide, so an expiry
// written by one process means the same instant to all others.
#pragma once

#include <time.h>

#include <cstdint>

namespace shmch {

inline uint64_t MonotonicNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

inline uint64_t MonotonicMs() { return MonotonicNs() / 1'000'000ull; }

}  // namespace shmch
