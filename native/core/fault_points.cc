#include "fault_points.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

namespace shmch {

int g_fault_point = 0;
FaultAction g_fault_action = FaultAction::kKill;
void (*g_test_hook)(int step) = nullptr;
static std::atomic<long> g_skips_left{0};

void InitFaultPointFromEnvironment() {
  const char* point = std::getenv("SHMCH_FAULT_POINT");
  const char* skip = std::getenv("SHMCH_FAULT_SKIP");
  const char* action = std::getenv("SHMCH_FAULT_ACTION");
  g_fault_point = point ? std::atoi(point) : 0;
  g_skips_left = skip ? std::atol(skip) : 0;
  g_fault_action = FaultAction::kKill;
  if (action && std::strcmp(action, "stop") == 0) g_fault_action = FaultAction::kStop;
  if (action && std::strcmp(action, "throw") == 0) g_fault_action = FaultAction::kThrow;
}

void ReachedFaultPoint(int) {
  if (g_skips_left.fetch_sub(1) > 0) return;
  switch (g_fault_action) {
    case FaultAction::kStop:
      g_fault_point = 0;  // once: after SIGCONT the process carries on normally
      raise(SIGSTOP);
      return;
    case FaultAction::kThrow:
      throw std::bad_alloc();
    case FaultAction::kKill:
      break;
  }
  kill(getpid(), SIGKILL);
  for (;;) pause();
}

}  // namespace shmch
