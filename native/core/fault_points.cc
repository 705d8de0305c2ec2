#include "fault_points.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>

namespace shmch {

int g_fault_point = 0;

void InitFaultPointFromEnvironment() {
  const char* value = std::getenv("SHMCH_FAULT_POINT");
  g_fault_point = value ? std::atoi(value) : 0;
}

void DieAtFaultPoint(int) {
  kill(getpid(), SIGKILL);
  for (;;) pause();
}

}  // namespace shmch
