// Test-only crash injection: with SHMCH_FAULT_POINT=N in the environment, the process SIGKILLs
// itself when it reaches fault point N inside a critical section, to prove recovery works.
// Costs one load and compare when unset.
#pragma once

namespace shmch {

extern int g_fault_point;
void InitFaultPointFromEnvironment();
[[noreturn]] void DieAtFaultPoint(int point);

#define FAULT_POINT(n)                                         \
  do {                                                         \
    if (__builtin_expect(::shmch::g_fault_point == (n), 0)) {  \
      ::shmch::DieAtFaultPoint(n);                             \
    }                                                          \
  } while (0)

}  // namespace shmch
