// Crash recovery: a process SIGKILLed at a fault point inside a critical section.
#include "harness.h"

// ---------------------------------------------------------------------------------------------
// Recovery: a process dies inside a critical section, holding the segment lock.

TEST(recovery_sender_dies_before_linking_node) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "r", "before");
  std::string how =
      DieAtFaultPoint(Options(name), 1, [&](Layer& child) { SendText(child, "r", "lost"); });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);  // takes the lock over from the dead child and rebuilds the derived state
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.lock_recoveries, 1u);
  CHECK_EQ(s.slots_attached, 1u);
  CHECK_EQ(s.queued, 1u);
  CHECK_EQ(ReceiveText(layer, "r", 10), std::vector<std::string>{"before"});
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);  // the dead sender's block was reclaimed
  SendText(layer, "r", "after");
  CHECK_EQ(ReceiveText(layer, "r", 10), std::vector<std::string>{"after"});
  CHECK_CLEAN(layer);
}

TEST(recovery_sender_dies_after_linking_node) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "r", "before");
  std::string how =
      DieAtFaultPoint(Options(name), 2, [&](Layer& child) { SendText(child, "r", "linked"); });
  CHECK_EQ(how, std::string("SIGKILL"));
  SendText(layer, "r", "after");  // this send recovers first
  CHECK_CLEAN(layer);
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  CHECK_EQ(ReceiveText(layer, "r", 10), (std::vector<std::string>{"before", "linked", "after"}));
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(recovery_receiver_dies_before_popping) {
  TempName name;
  Layer layer(Options(name));
  for (int i = 0; i < 5; ++i) SendText(layer, "r", "m" + std::to_string(i));
  std::string how =
      DieAtFaultPoint(Options(name), 3, [&](Layer& child) { ReceiveText(child, "r", 3); });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  CHECK_EQ(ReceiveText(layer, "r", 10), Texts("m", 0, 5));  // nothing was lost
  CHECK_CLEAN(layer);
}

TEST(recovery_group_sender_dies_midway) {
  TempName name;
  Layer layer(Options(name));
  for (const char* c : {"g.a", "g.b", "g.c"}) layer.GroupAdd("g", c);
  std::string how = DieAtFaultPoint(Options(name), 2, [&](Layer& child) {
    // after linking the first member's node: one block, refcount 1
    GroupSendText(child, "g", "partial");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.queued, 1u);
  CHECK_EQ(s.members, 3u);
  uint32_t got = 0;
  for (const char* c : {"g.a", "g.b", "g.c"}) got += ReceiveText(layer, c, 5).size();
  CHECK_EQ(got, 1u);
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_EQ(GroupSendText(layer, "g", "whole"), 3u);
  CHECK_CLEAN(layer);
}

TEST(recovery_by_a_newcomer_in_the_dead_holders_slot) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "r", "kept");
  uint32_t dead_slot = shmch::kNil;
  int pipe_fds[2];
  CHECK(pipe(pipe_fds) == 0);
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    uint32_t slot = child.slot_index();
    if (write(pipe_fds[1], &slot, sizeof slot) != sizeof slot) _exit(5);
    shmch::g_fault_point = 3;
    ReceiveText(child, "r", 1);
  });
  if (read(pipe_fds[0], &dead_slot, sizeof dead_slot) != sizeof dead_slot) dead_slot = shmch::kNil;
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  CHECK_EQ(how, std::string("SIGKILL"));
  // Nobody touched the segment since: the newcomer claims the dead slot and finds the lock owned
  // by that slot, i.e. by itself.
  Layer newcomer(Options(name));
  CHECK_EQ(newcomer.slot_index(), dead_slot);
  CHECK_CLEAN(newcomer);
  CHECK_CLEAN(layer);
  CHECK_EQ(newcomer.Stats().slots_attached, 2u);
  CHECK_EQ(ReceiveText(newcomer, "r", 5), std::vector<std::string>{"kept"});
  CHECK_CLEAN(layer);
}

TEST(recovery_reclaims_a_dead_instances_slot_and_waits) {
  TempName name;
  Layer layer(Options(name));
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    ReceiveText(child, "dead.waiting", 1);  // registers a waiter, then dies outside any lock
    kill(getpid(), SIGKILL);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_EQ(layer.Stats().slots_attached, 1u);
  // Attaching reclaims dead slots: the dead waiter's registration no longer holds the record.
  Layer next(Options(name));
  CHECK(!HasChannel(layer, "dead.waiting"));
  CHECK_EQ(layer.Stats().channels, 0u);
  CHECK_EQ(layer.Stats().lock_recoveries, 0u);  // it died outside the lock
  CHECK_CLEAN(layer);
}

// Regression: Enqueue() moves the channel's waiters into pending_ring_ only after linking the node
// (fault point 2); Recover() used to rebuild the queue without ringing anyone, so a receiver
// registered on the channel slept although the dead sender's message was queued.
TEST(recovery_wakes_waiters_of_a_message_left_by_a_dead_sender) {
  TempName name;
  Layer receiver(Options(name));
  CHECK(ReceiveText(receiver, "wake", 1).empty());  // registered as a waiter
  std::string how =
      DieAtFaultPoint(Options(name), 2, [&](Layer& child) { SendText(child, "wake", "queued"); });
  CHECK_EQ(how, std::string("SIGKILL"));
  Layer other(Options(name));
  CHECK_CLEAN(other);  // recovery
  CHECK_EQ(other.Stats().queued, 1u);
  CHECK(receiver.TakeBell());
}

// A sender killed after it released the lock but before it rang (fault point 20): the message is
// queued and consistent; nothing rang, so the receiver finds it on its next look (the JS layer's
// housekeeping tick looks at every waiting receive).
TEST(a_sender_killed_between_publish_and_ring_leaves_the_message_findable) {
  TempName name;
  Layer receiver(Options(name));
  CHECK(ReceiveText(receiver, "unrung", 1).empty());
  CHECK(receiver.Arm());
  std::string how = DieAtFaultPoint(Options(name), 20,
                                    [&](Layer& child) { SendText(child, "unrung", "published"); });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK(!Readable(receiver.doorbell_fd(), 0));
  CHECK_EQ(ReceiveText(receiver, "unrung", 1), (std::vector<std::string>{"published"}));
  CHECK_CLEAN(receiver);
}

// Regression: SharedLockOps::Lock() used to return kOwnerDied without counting it in `recoveries`
// when the lock was owned by the caller's own slot, which happens whenever a newcomer claims a dead
// holder's slot before anyone else took the lock over.
TEST(recovery_by_a_newcomer_is_counted_in_lock_recoveries) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "r", "x");
  std::string how =
      DieAtFaultPoint(Options(name), 3, [&](Layer& child) { ReceiveText(child, "r", 1); });
  CHECK_EQ(how, std::string("SIGKILL"));
  Layer newcomer(Options(name));
  CHECK_CLEAN(newcomer);
  CHECK_EQ(newcomer.Stats().lock_recoveries, 1u);
}
