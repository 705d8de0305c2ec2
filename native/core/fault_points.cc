#include "fault_points.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>

namespace shmch {

int g_fault_point = 0;
static std::atomic<long> g_skips_left{0};

void InitFaultPointFromEnvironment() {
  const char* point = std::getenv("SHMCH_FAULT_POINT");
  const char* skip = std::getenv("SHMCH_FAULT_SKIP");
  g_fault_point = point ? std::atoi(point) : 0;
  g_skips_left = skip ? std::atol(skip) : 0;
}

void ReachedFaultPoint(int) {
  if (g_skips_left.fetch_sub(1) > 0) return;
  kill(getpid(), SIGKILL);
  for (;;) pause();
}

}  // namespace shmch
