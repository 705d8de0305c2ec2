// Test-only crash injection: with SHMCH_FAULT_POINT=N in the environment, the process SIGKILLs
// itself when it reaches fault point N inside a critical section, to prove recovery works.
// SHMCH_FAULT_SKIP=K lets it pass the point K times first, so a run dies at a random moment.
// Costs one load and compare when unset. The points:
//   1 send: node written, not linked          6 flush: groups cleared, channels not yet
//   2 send: linked, tail and count stale       7 expiry: head advanced, block not released
//   3 receive: copied out, nothing popped      8 arena: pages marked, header not updated
//   4 group add: member published, unlinked    9 segment init: sized, not yet ready
//   5 group discard: half unlinked            10 new channel/group record: published, not hashed
//  11 table growth: step reserved, count not published
//  12 arena: chunks reserved in /dev/shm, not marked committed
//  13 arena: chunk unmarked, hole not yet punched
//  20 any operation: lock released, doorbells not rung yet (a sender dying between publish and ring)
#pragma once

namespace shmch {

extern int g_fault_point;
void InitFaultPointFromEnvironment();
void ReachedFaultPoint(int point);  // dies unless skips remain

#define FAULT_POINT(n)                                         \
  do {                                                         \
    if (__builtin_expect(::shmch::g_fault_point == (n), 0)) {  \
      ::shmch::ReachedFaultPoint(n);                           \
    }                                                          \
  } while (0)

}  // namespace shmch
