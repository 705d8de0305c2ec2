// Test-only crash injection: with SHMCH_FAULT_POINT=N in the environment, the process SIGKILLs
// itself when it reaches fault point N inside a critical section, to prove recovery works.
// SHMCH_FAULT_SKIP=K lets it pass the point K times first, so a run dies at a random moment.
// SHMCH_FAULT_ACTION=stop makes it SIGSTOP itself there instead (a stopped lock holder, resumed by
// SIGCONT); =throw makes it throw std::bad_alloc there (an operation that fails half-way).
// Costs one load and compare when unset. The points:
//   1 send: node written, not linked          6 flush: groups cleared, channels not yet
//   2 send: linked, tail and count stale       7 expiry: head advanced, block not released
//   3 receive: copied out, nothing popped      8 arena: pages marked, header not updated
//   4 group add: member published, unlinked    9 segment init: sized, not yet ready
//   5 group discard: half unlinked            10 new channel/group record: published, not hashed
//  11 table growth: step reserved, count not published
//  12 arena: chunks reserved in /dev/shm, not marked committed
//  13 arena: chunk unmarked, hole not yet punched
//  14 recovery: started, nothing rebuilt yet
//  15 lock: acquired, nothing done yet (any operation)
//  16 drop channel (release, reclaim): head advanced, node and block not yet freed
//  17 reclaim: a dead instance's '!' channels out of their groups, not yet dropped
//  20 any operation: lock released, doorbells not rung yet (a sender dying between publish and ring)
//  21 receiveAny: copied out, waits registered, nothing popped
//  22 large send: block reserved and held, payload not copied yet (payload.cc)
//  23 large send: payload copied, lock not held, not published yet
//  24 large send: node linked, the hold not dropped yet
//  25 receive, receiveAny: large messages popped into holds, not copied out yet
//  26 receive, receiveAny: large payloads copied out, lock not held, holds not dropped yet
//  27 release: a direct send's node out of its inbox (head or middle), block not released yet
//  28 group add: the fan of (group, inbox) linked, the '!' member not published yet
//  29 group discard: a fan's last '!' member removed, the fan not removed yet
#pragma once

namespace shmch {

enum class FaultAction { kKill, kStop, kThrow };

extern int g_fault_point;
extern FaultAction g_fault_action;
void InitFaultPointFromEnvironment();
void ReachedFaultPoint(int point);  // dies (or stops, or throws) unless skips remain

// Test-only hook called at the lock's internal steps (shared_lock.h LockTestStep), so a unit test
// can stand in for a preemption at exactly that instant. Null outside tests.
extern void (*g_test_hook)(int step);
inline void ReachedTestStep(int step) {
  if (__builtin_expect(g_test_hook != nullptr, 0)) g_test_hook(step);
}

#define FAULT_POINT(n)                                         \
  do {                                                         \
    if (__builtin_expect(::shmch::g_fault_point == (n), 0)) {  \
      ::shmch::ReachedFaultPoint(n);                           \
    }                                                          \
  } while (0)

}  // namespace shmch
