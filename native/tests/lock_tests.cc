// The segment lock: takeovers never rob a live holder, waiters and holders killed anywhere, hold
// times.
#include "harness.h"

// ---------------------------------------------------------------------------------------------
// The segment lock: a takeover decided on a stale observation must never rob a live holder.

namespace {

// Forks a child that opens the layer and stops itself (SIGSTOP) holding the segment lock at fault
// point 15, i.e. while its constructor's first critical section holds the lock. Returns its pid
// once it is stopped, or -1.
pid_t StartChildStoppedInsideTheLock(const TempName& name) {
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    shmch::g_test_hook = nullptr;
    shmch::g_fault_point = 15;
    shmch::g_fault_action = shmch::FaultAction::kStop;
    try {
      Layer child(Options(name));
      SendText(child, "inside", "child was here");
    } catch (...) {
      _exit(3);
    }
    _exit(0);
  }
  int status = 0;
  if (waitpid(pid, &status, WUNTRACED) != pid || !WIFSTOPPED(status)) return -1;
  return pid;
}

std::string ContinueAndReap(pid_t pid) {
  kill(pid, SIGCONT);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "exit " + std::to_string(WEXITSTATUS(status));
}

// What the test hook of the lock does, once, at one step of the parent's Lock().
struct LockScenario {
  const TempName* name = nullptr;
  pid_t holder = -1;    // close scenario: the live holder, resumed and reaped before the probe
  pid_t newcomer = -1;  // started (stopped inside the lock, in the dead holder's slot) after it
  bool done = false;
};

// However a lock test ends, its stopped children are resumed and reaped (a failed CHECK must not
// leave stopped processes holding ctest's output pipe).
struct ReapScenarioChildren {
  ~ReapScenarioChildren();
};
LockScenario g_scenario;

ReapScenarioChildren::~ReapScenarioChildren() {
  shmch::g_test_hook = nullptr;
  for (pid_t* pid : {&g_scenario.holder, &g_scenario.newcomer}) {
    if (*pid > 0) ContinueAndReap(*pid);
    *pid = -1;
  }
}

void LockScenarioHook(int step) {
  LockScenario& sc = g_scenario;
  if (sc.done) return;
  if (step == shmch::kLockStepBeforeProbe && sc.holder > 0) {
    // The holder we saw in the word finishes, unlocks and closes normally: its slot looks dead.
    ContinueAndReap(sc.holder);
    sc.holder = -1;
    return;
  }
  if (step == shmch::kLockStepProbedDead && sc.holder <= 0) {
    // Preempted between the probe and the CAS: meanwhile a newcomer claims the dead slot and
    // enters the critical section.
    sc.done = true;
    sc.newcomer = StartChildStoppedInsideTheLock(*sc.name);
  }
}

}  // namespace

namespace {

// The waiter's send while the scenario's hook preempts it inside Lock() (a bounded wait, so a
// waiter kept out sees kBusy). Returns the error code it got; `entered` when it got in.
std::string WaiterSendsDuringTheScenario(Layer& waiter, bool& entered) {
  shmch::g_test_hook = &LockScenarioHook;
  waiter.SetLockWait(300'000'000);
  std::string error;
  try {
    SendText(waiter, "q", "waiter");
    entered = true;
  } catch (const Error& e) {
    error = shmch::ErrorCodeName(e.code());
  }
  shmch::g_test_hook = nullptr;
  return error;
}

// Lets the newcomer stopped inside the lock finish, then the waiter sends again, unbounded.
void ResumeTheNewcomerAndSendAgain(Layer& waiter, pid_t newcomer) {
  g_scenario.newcomer = -1;
  CHECK_EQ(ContinueAndReap(newcomer), std::string("exit 0"));
  waiter.SetLockWait(UINT64_MAX);
  SendText(waiter, "q", "after");
  CHECK_CLEAN(waiter);
}

}  // namespace

// Scenario A of the review (finding 1): the holder dies; a waiter probes it dead and is preempted
// before its CAS; a respawned process claims the same slot and takes the lock. The old lock word
// (slot + 1 only) let the waiter's CAS succeed: two processes inside. Now the CAS fails and the
// waiter sees a live holder.
TEST(lock_takeover_after_a_crash_cannot_rob_a_respawned_holder) {
  TempName name;
  Layer waiter(Options(name));
  SendText(waiter, "q", "before");
  std::string how =
      DieAtFaultPoint(Options(name), 15, [&](Layer& child) { SendText(child, "q", "never"); });
  CHECK_EQ(how, std::string("SIGKILL"));
  g_scenario = LockScenario{&name};
  ReapScenarioChildren reap;
  bool entered = false;
  std::string error = WaiterSendsDuringTheScenario(waiter, entered);
  pid_t newcomer = g_scenario.newcomer;
  CHECK(newcomer > 0);
  // The newcomer is stopped inside the critical section: the waiter must not have got in.
  CHECK(!entered);
  CHECK_EQ(error, std::string("EBUSY"));
  ResumeTheNewcomerAndSendAgain(waiter, newcomer);
  CHECK_EQ(ReceiveText(waiter, "q", 10), (std::vector<std::string>{"before", "after"}));
  CHECK_EQ(ReceiveText(waiter, "inside", 10), std::vector<std::string>{"child was here"});
}

// Scenario B (no crash at all): the waiter sees a live holder, which then unlocks and closes; the
// waiter probes its slot dead and is preempted before the CAS; a newcomer claims the slot and
// takes the lock normally.
TEST(lock_takeover_after_a_close_cannot_rob_a_newcomer_in_the_same_slot) {
  TempName name;
  Layer waiter(Options(name));
  pid_t holder = StartChildStoppedInsideTheLock(name);
  CHECK(holder > 0);
  g_scenario = LockScenario{&name, holder};
  ReapScenarioChildren reap;
  bool entered = false;
  std::string error = WaiterSendsDuringTheScenario(waiter, entered);
  pid_t newcomer = g_scenario.newcomer;
  CHECK(g_scenario.holder == -1);  // the first holder was resumed and closed
  CHECK(newcomer > 0);
  CHECK(!entered);
  CHECK_EQ(error, std::string("EBUSY"));
  ResumeTheNewcomerAndSendAgain(waiter, newcomer);
  CHECK_EQ(ReceiveText(waiter, "q", 10), std::vector<std::string>{"after"});
  CHECK_EQ(ReceiveText(waiter, "inside", 10).size(), 2u);
}

namespace {

// The segment lock's fields as another process sees them.
struct LockFields {
  uint32_t word, recovery_pending;
};
LockFields ReadLock(const TempName& name) {
  int fd = open(name.path().c_str(), O_RDONLY);
  LockFields f{~0u, ~0u};
  if (fd < 0) return f;
  shmch::SharedLock lock;
  if (pread(fd, &lock, sizeof lock, offsetof(shmch::Header, lock)) == sizeof lock) {
    f.word = lock.word.load();
    f.recovery_pending = lock.recovery_pending.load();
  }
  close(fd);
  return f;
}

}  // namespace

// Finding 9: a process killed while it sleeps on the lock used to leave `waiters` at +1 forever,
// and every unlock by anyone made a FUTEX_WAKE syscall from then on. Now "someone may sleep" is a
// bit in the word that every unlock clears: after one more lock cycle the word is plain again.
TEST(lock_waiter_killed_in_its_sleep_leaves_nothing_behind) {
  TempName name;
  Layer layer(Options(name));
  pid_t holder = StartChildStoppedInsideTheLock(name);
  CHECK(holder > 0);
  std::fflush(stdout);
  pid_t sleeper = fork();
  if (sleeper == 0) {
    try {
      Layer child(Options(name));  // waits for the stopped holder
    } catch (...) {
    }
    _exit(0);
  }
  CHECK(sleeper > 0);
  bool contended = false;
  for (int i = 0; i < 200 && !contended; ++i) {
    usleep(5000);
    contended = (ReadLock(name).word & shmch::kLockContended) != 0;
  }
  CHECK(contended);  // the sleeper announced itself in the word
  usleep(20000);
  kill(sleeper, SIGKILL);
  waitpid(sleeper, nullptr, 0);
  CHECK_EQ(ContinueAndReap(holder), std::string("exit 0"));
  SendText(layer, "q", "x");  // a lock cycle after the holder's wake-up unlock
  CHECK_EQ(ReceiveText(layer, "q", 1), std::vector<std::string>{"x"});
  CHECK_EQ(ReadLock(name).word, 0u);  // free, and no contended bit: unlocks make no syscall
  CHECK_CLEAN(layer);
}

// Finding 7: Recover() failing inside Critical's constructor (bad_alloc, ECORRUPT) used to leave
// a live process holding the lock: every other process blocked until that one's next call.
// Now the lock is released on the way out and "recovery pending" makes the next holder redo it.
TEST(lock_released_when_recovery_throws_and_the_next_holder_recovers) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "q", "kept");
  std::string how =
      DieAtFaultPoint(Options(name), 15, [&](Layer& child) { SendText(child, "q", "never"); });
  CHECK_EQ(how, std::string("SIGKILL"));
  shmch::g_fault_point = 14;  // recovery started (14)
  shmch::g_fault_action = shmch::FaultAction::kThrow;
  bool threw = false;
  try {
    SendText(layer, "q", "fails");
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  shmch::g_fault_point = 0;
  shmch::g_fault_action = shmch::FaultAction::kKill;
  CHECK(threw);
  LockFields after = ReadLock(name);
  CHECK_EQ(after.word, 0u);  // released although the constructor of Critical threw
  CHECK_EQ(after.recovery_pending, 1u);
  // Another process gets in at once and completes the recovery.
  std::string other = RunChild([&] {
    Layer next(Options(name));
    next.SetLockWait(2'000'000'000);
    SendText(next, "q", "other");
    if (!next.Verify().empty()) _exit(6);
    _exit(0);
  });
  CHECK_EQ(other, std::string("exit 0"));
  CHECK_EQ(ReadLock(name).recovery_pending, 0u);
  CHECK_EQ(ReceiveText(layer, "q", 10), (std::vector<std::string>{"kept", "other"}));
  CHECK_CLEAN(layer);
}

// A process killed while it recovers a dead holder's state (fault point 14): the next holder
// takes over from it and recovers again.
TEST(recovery_killed_halfway_is_redone_by_the_next_holder) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "q", "kept");
  CHECK_EQ(DieAtFaultPoint(Options(name), 15, [&](Layer& child) { SendText(child, "q", "never"); }),
           std::string("SIGKILL"));
  CHECK_EQ(RunChildThatDies([&] {
             shmch::g_fault_point = 14;
             Layer child(Options(name));  // takes the lock over, dies recovering
           }),
           std::string("SIGKILL"));
  CHECK_EQ(ReadLock(name).recovery_pending, 1u);
  SendText(layer, "q", "after");
  CHECK_EQ(ReadLock(name).recovery_pending, 0u);
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveText(layer, "q", 10), (std::vector<std::string>{"kept", "after"}));
}
// ---------------------------------------------------------------------------------------------
// Lock hold times (lock_hold.h): per operation, in this instance's private memory.

TEST(lock_hold_buckets_bound_every_duration_within_a_quarter) {
  using H = shmch::LockHoldHistogram;
  for (uint64_t v : {0ull, 1ull, 3ull, 4ull, 5ull, 7ull, 8ull, 999ull, 1000ull, 1023ull, 1024ull,
                     1025ull, 3'000'000ull, 123'456'789ull, (1ull << 40) + 12345ull, ~0ull}) {
    int b = H::BucketOf(v);
    CHECK(b >= 0 && b < H::kBuckets);
    CHECK(H::UpperEdgeOf(b) >= v);
    if (b > 0) CHECK(H::UpperEdgeOf(b - 1) < v);  // the buckets are contiguous and ordered
    CHECK(static_cast<double>(H::UpperEdgeOf(b)) <= static_cast<double>(v) * 1.25 + 1);
  }
  H h;
  CHECK_EQ(h.Percentile(0.99), 0u);
  for (int i = 0; i < 99; ++i) h.Record(1000);
  h.Record(50'000);
  CHECK_EQ(h.count(), 100u);
  CHECK_EQ(h.max_ns(), 50'000u);
  CHECK_EQ(h.Percentile(0.50), H::UpperEdgeOf(H::BucketOf(1000)));
  CHECK_EQ(h.Percentile(0.99), H::UpperEdgeOf(H::BucketOf(1000)));  // rank 99 of 100
  CHECK_EQ(h.Percentile(1.0), 50'000u);  // capped at the maximum, not the bucket's edge
}

namespace {
int g_hold_sleeps_left = 0;
void SleepWhileHoldingTheLock(int step) {
  if (step != shmch::kLockStepHeld || g_hold_sleeps_left <= 0) return;
  --g_hold_sleeps_left;
  usleep(3000);
}
struct ClearTestHook {
  ~ClearTestHook() { shmch::g_test_hook = nullptr; }
};
}  // namespace

TEST(lock_hold_time_of_a_critical_section_lands_in_its_operations_bucket) {
  using shmch::LockOp;
  using H = shmch::LockHoldHistogram;
  TempName name;
  Layer layer(Options(name));
  CHECK(layer.lock_hold()[LockOp::kOther].count() >= 1);  // attaching took the lock
  for (int i = 0; i < 20; ++i) SendText(layer, "q", "m" + std::to_string(i));
  CHECK_EQ(ReceiveText(layer, "q", 100).size(), 20u);
  const auto& stats = layer.lock_hold();
  CHECK_EQ(stats[LockOp::kSend].count(), 20u);
  CHECK_EQ(stats[LockOp::kReceive].count(), 1u);
  CHECK_EQ(stats[LockOp::kGroupAdd].count(), 0u);

  // 3 ms of sleep inside one groupAdd's critical section: one groupAdd sample of at least 3 ms,
  // no longer than the whole call took, in the bucket of its maximum.
  ClearTestHook clear;
  g_hold_sleeps_left = 1;
  shmch::g_test_hook = &SleepWhileHoldingTheLock;
  uint64_t began = shmch::MonotonicNs();
  layer.GroupAdd("g", "q");
  uint64_t call_ns = shmch::MonotonicNs() - began;
  shmch::g_test_hook = nullptr;
  CHECK_EQ(g_hold_sleeps_left, 0);
  const H& add = stats[LockOp::kGroupAdd];
  CHECK_EQ(add.count(), 1u);
  CHECK(add.max_ns() >= 3'000'000u);
  CHECK(add.max_ns() <= call_ns);
  CHECK_EQ(add.bucket(H::BucketOf(add.max_ns())), 1u);
  CHECK_EQ(add.Percentile(0.99), add.max_ns());
  CHECK(H::UpperEdgeOf(H::BucketOf(add.max_ns())) >= 3'000'000u);
  CHECK_EQ(stats[LockOp::kSend].count(), 20u);  // the sleep was counted once, as a groupAdd

  // A holder killed inside the lock: the next critical section rebuilds derived state, and its
  // time is counted as a recovery, not as the send it began as.
  std::string how =
      DieAtFaultPoint(Options(name), 1, [&](Layer& child) { SendText(child, "q", "never"); });
  CHECK_EQ(how, std::string("SIGKILL"));
  SendText(layer, "q", "after");
  CHECK_EQ(stats[LockOp::kRecover].count(), 1u);
  CHECK_EQ(stats[LockOp::kSend].count(), 20u);
  SendText(layer, "q", "again");
  CHECK_EQ(stats[LockOp::kSend].count(), 21u);
  layer.ResetLockHold();
  CHECK_EQ(stats[LockOp::kSend].count(), 0u);
  CHECK_CLEAN(layer);
}
