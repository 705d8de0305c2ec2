// Waiters and doorbells: who a message wakes, passing a wake-up on, rings that cannot be delivered.
#include "harness.h"

// The FIFO is written only while its receiver is armed (asleep on it): a receiver that polls the
// bell from shared memory costs its senders no syscall.
TEST(doorbell_fifo_is_written_only_while_armed) {
  TempName name;
  Layer receiver(Options(name));
  Layer sender(Options(name));
  int fd = receiver.doorbell_fd();
  CHECK(fd >= 0);
  CHECK(ReceiveText(receiver, "fifo", 1).empty());
  SendText(sender, "fifo", "one");
  CHECK(!Readable(fd, 0));  // not armed: the bell in shared memory is enough
  CHECK(!receiver.Arm());   // the ring came first: arming refuses, look now
  CHECK_EQ(ReceiveText(receiver, "fifo", 1), (std::vector<std::string>{"one"}));
  CHECK(receiver.TakeBell());
  CHECK(ReceiveText(receiver, "fifo", 1).empty());
  CHECK(receiver.Arm());
  SendText(sender, "fifo", "two");
  CHECK(Readable(fd, 1000));
  SendText(sender, "fifo", "three");  // coalesced: the bell is still set
  receiver.Disarm();
  CHECK(!Readable(fd, 0));  // drained
  CHECK(receiver.TakeBell());
  CHECK_EQ(ReceiveText(receiver, "fifo", 5), (std::vector<std::string>{"two", "three"}));
  struct stat st;
  CHECK(stat(shmch::Doorbells::FifoPath(name.str(), receiver.slot_index()).c_str(), &st) == 0);
  CHECK(S_ISFIFO(st.st_mode));
  CHECK_EQ(st.st_mode & 0077u, 0u);
}

// One receive call consumes the bell and the ready list when it names every waited-on channel.
TEST(receive_covering_all_waits_consumes_bell_and_ready_list) {
  TempName name;
  Layer receiver(Options(name));
  Layer sender(Options(name));
  shmch::ReceivedBatch batch;
  receiver.Receive({{"a", 1}, {"b", 1}}, batch, true);
  CHECK(batch.request_of.empty());
  SendText(sender, "b", "x");
  receiver.Receive({{"a", 1}, {"b", 1}}, batch, true);
  CHECK_EQ(batch.request_of.size(), size_t{1});
  CHECK(!receiver.TakeBell());
  std::vector<std::string> ready;
  CHECK(receiver.TakeReady(ready));
  CHECK(ready.empty());
}

// A message wakes one waiter of a shared channel, not all of them; a waiter that takes a message
// and leaves others wakes the next one.
TEST(a_message_wakes_one_waiter_and_the_taker_passes_the_rest_on) {
  TempName name;
  Layer a(Options(name)), b(Options(name)), c(Options(name));
  Layer sender(Options(name));
  CHECK(ReceiveText(a, "shared", 1).empty());
  CHECK(ReceiveText(b, "shared", 1).empty());
  CHECK(ReceiveText(c, "shared", 1).empty());
  SendText(sender, "shared", "m1");
  int rung = int{a.TakeBell()} + int{b.TakeBell()} + int{c.TakeBell()};
  CHECK_EQ(rung, 1);
  SendText(sender, "shared", "m2");
  SendText(sender, "shared", "m3");
  // Three messages rang three different waiters (round robin).
  CHECK_EQ(int{a.TakeBell()} + int{b.TakeBell()} + int{c.TakeBell()}, 2);
  // a takes one of three and leaves two: someone else is woken for them.
  CHECK_EQ(ReceiveText(a, "shared", 1).size(), size_t{1});
  CHECK(!a.TakeBell());
  CHECK_EQ(int{b.TakeBell()} + int{c.TakeBell()}, 1);
  CHECK_CLEAN(sender);
}

// The round robin crosses the 64-slot words of the waiter mask, both ways.
TEST(wake_ups_rotate_over_waiters_in_different_mask_words) {
  TempName name;
  std::vector<std::unique_ptr<Layer>> layers;
  for (int i = 0; i < 70; ++i) layers.push_back(std::make_unique<Layer>(Options(name)));
  Layer& low = *layers[3];
  Layer& high = *layers[68];
  Layer& sender = *layers[69];
  CHECK_EQ(low.slot_index(), 3u);
  CHECK_EQ(high.slot_index(), 68u);
  CHECK(ReceiveText(low, "rr", 1).empty());
  CHECK(ReceiveText(high, "rr", 1).empty());
  for (int round = 0; round < 3; ++round) {
    SendText(sender, "rr", "a");
    bool first_low = low.TakeBell();
    bool first_high = high.TakeBell();
    CHECK(first_low != first_high);  // exactly one woken
    SendText(sender, "rr", "b");
    CHECK_EQ(low.TakeBell(), !first_low);  // then the other one
    CHECK_EQ(high.TakeBell(), !first_high);
  }
  CHECK_CLEAN(sender);
}

// A waiter that was woken and then withdrew its wait (its receive was cancelled) passes the wake-up
// on, through unwait or through a receive that covers all its waits.
TEST(a_withdrawn_wait_passes_its_wake_up_on) {
  TempName name;
  Layer a(Options(name)), b(Options(name));
  Layer sender(Options(name));
  CHECK(ReceiveText(a, "p", 1).empty());
  CHECK(ReceiveText(b, "p", 1).empty());
  SendText(sender, "p", "m");
  Layer& woken = a.TakeBell() ? a : b;
  Layer& other = &woken == &a ? b : a;
  CHECK(!other.TakeBell());
  woken.Unwait({"p"});
  CHECK(other.TakeBell());
  // The same through a covering receive that no longer names "p".
  CHECK(ReceiveText(woken, "p", 0).empty());
  CHECK_EQ(ReceiveText(other, "p", 1), (std::vector<std::string>{"m"}));
  CHECK(ReceiveText(a, "p", 1).empty());
  CHECK(ReceiveText(b, "p", 1).empty());
  a.TakeBell();
  b.TakeBell();
  SendText(sender, "p", "n");
  Layer& woken2 = a.TakeBell() ? a : b;
  Layer& other2 = &woken2 == &a ? b : a;
  CHECK(!other2.TakeBell());
  shmch::ReceivedBatch batch;
  woken2.Receive({{"q", 1}}, batch, true);  // covers all of its waits: "p" is no longer one
  CHECK(batch.request_of.empty());
  CHECK(other2.TakeBell());
  CHECK_EQ(ReceiveText(other2, "p", 1), (std::vector<std::string>{"n"}));
}

// Finding #3: ringing must never throw (it runs in ~Critical). A sender at its descriptor limit
// cannot open the receiver's FIFO: the message is queued, the ring is counted as failed, and the
// process lives on. Before the fix: std::terminate (SIGABRT) from sem_open's EMFILE.
TEST(a_ring_that_cannot_be_delivered_is_counted_never_thrown) {
  TempName name;
  Layer receiver(Options(name));
  CHECK(ReceiveText(receiver, "emfile", 1).empty());
  CHECK(receiver.Arm());
  std::string how = RunChild([&] {
    Layer sender(Options(name));
    struct rlimit lim;
    getrlimit(RLIMIT_NOFILE, &lim);
    std::vector<int> held;
    for (;;) {  // use up every descriptor
      int fd = dup(0);
      if (fd < 0) break;
      held.push_back(fd);
    }
    SendText(sender, "emfile", "queued");
    if (sender.Stats().ring_failures != 1) _exit(3);
    for (int fd : held) close(fd);
    _exit(0);
  });
  CHECK_EQ(how, std::string("exit 0"));
  CHECK_EQ(ReceiveText(receiver, "emfile", 1), (std::vector<std::string>{"queued"}));
}

// The same when the sender had the FIFO open already (its write end cached from an earlier ring):
// the write fails with EPIPE, which must neither raise SIGPIPE nor stick.
TEST(ringing_a_cached_doorbell_whose_reader_died_is_harmless) {
  TempName name;
  Layer sender(Options(name));
  int ready[2], go[2];
  CHECK(pipe(ready) == 0 && pipe(go) == 0);
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    Layer receiver(Options(name));
    ReceiveText(receiver, "cached", 1);
    receiver.Arm();
    char c = 'a';
    if (write(ready[1], &c, 1) != 1) _exit(5);
    if (!Readable(receiver.doorbell_fd(), 5000)) _exit(6);  // the first ring arrived by FIFO
    receiver.Disarm();
    receiver.TakeBell();
    if (ReceiveText(receiver, "cached", 1).size() != 1) _exit(7);
    ReceiveText(receiver, "cached", 1);  // waits again
    receiver.Arm();
    if (write(ready[1], &c, 1) != 1) _exit(5);
    if (read(go[0], &c, 1) != 1) _exit(8);
    raise(SIGKILL);
  }
  char c;
  CHECK(read(ready[0], &c, 1) == 1);
  SendText(sender, "cached", "zero");  // caches the write end
  CHECK(read(ready[0], &c, 1) == 1);
  CHECK(write(go[1], &c, 1) == 1);
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  CHECK_EQ(sender.Stats().ring_failures, uint64_t{0});
  SendText(sender, "cached", "one");  // EPIPE, no signal
  CHECK_EQ(sender.Stats().ring_failures, uint64_t{1});
  Layer next(Options(name));  // takes the dead slot over, and the FIFO with it
  CHECK_EQ(next.slot_index(), uint32_t{1});
  CHECK(ReceiveText(next, "cached", 2).size() == 1);
  CHECK(ReceiveText(next, "cached", 1).empty());
  CHECK(next.Arm());
  SendText(sender, "cached", "two");  // opens the FIFO again and wakes the new owner
  CHECK(Readable(next.doorbell_fd(), 1000));
  for (int fd : {ready[0], ready[1], go[0], go[1]}) close(fd);
}

// A receiver killed while armed leaves a FIFO with no reader: ringing it is a counted failure,
// not a SIGPIPE (this test binary does not ignore SIGPIPE), and the next owner of the slot gets
// the message.
TEST(ringing_a_receiver_killed_while_armed_is_harmless) {
  TempName name;
  Layer sender(Options(name));
  std::string how = RunChildThatDies([&] {
    Layer receiver(Options(name));
    ReceiveText(receiver, "armed", 1);
    receiver.Arm();
    raise(SIGKILL);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  SendText(sender, "armed", "first");   // opens the dead FIFO: no reader
  SendText(sender, "armed", "second");  // bell already set: no syscall
  CHECK(sender.Stats().ring_failures >= 1);
  Layer next(Options(name));
  CHECK_EQ(ReceiveText(next, "armed", 5), (std::vector<std::string>{"first", "second"}));
  CHECK_CLEAN(next);
}
