// receiveAny: oldest head first across a channel set, expiry, waits, recovery.
#include "harness.h"

// ---------------------------------------------------------------------------------------------
// receiveAny.

namespace {

struct AnyText {
  std::vector<std::string> messages;  // "<channel>:<payload>"
  std::vector<uint32_t> still_ready;
};

AnyText ReceiveAnyText(Layer& layer, uint32_t set, const std::vector<std::string>& names,
                       const std::vector<uint32_t>& positions, uint32_t wanted) {
  shmch::AnyBatch batch;
  layer.ReceiveAny(set, positions, wanted, batch);
  AnyText out;
  size_t at = 0;
  for (size_t i = 0; i < batch.position_of.size(); ++i) {
    out.messages.push_back(
        names[batch.position_of[i]] + ":" +
        std::string(reinterpret_cast<const char*>(batch.bytes.data()) + at, batch.length_of[i]));
    at += batch.length_of[i];
  }
  out.still_ready = batch.still_ready;
  std::sort(out.still_ready.begin(), out.still_ready.end());
  return out;
}

}  // namespace

TEST(receive_any_takes_the_oldest_head_first_and_keeps_channel_order) {
  TempName name;
  Layer layer(Options(name));
  Layer sender(Options(name));
  std::vector<std::string> names = {"x", "y", "z"};
  uint32_t set = layer.DefineSet(names);
  SendText(sender, "y", "1");
  SendText(layer, "x", "2");
  SendText(sender, "y", "3");
  SendText(layer, "z", "4");
  SendText(sender, "x", "5");
  AnyText got = ReceiveAnyText(layer, set, names, {0, 1, 2}, 3);
  CHECK_EQ(got.messages, (std::vector<std::string>{"y:1", "x:2", "y:3"}));
  CHECK_EQ(got.still_ready, (std::vector<uint32_t>{0, 2}));  // y is empty now: it holds our wait
  got = ReceiveAnyText(layer, set, names, {0, 2}, 5);
  CHECK_EQ(got.messages, (std::vector<std::string>{"z:4", "x:5"}));
  CHECK(got.still_ready.empty());
  CHECK(!layer.TakeBell());
  // Every channel of the set now holds our wait: a send to any of them rings us.
  SendText(sender, "z", "6");
  CHECK(layer.TakeBell());
  std::vector<std::string> ready;
  CHECK(layer.TakeReady(ready));
  CHECK_EQ(ready, (std::vector<std::string>{"z"}));
  // Only the channel that rang is asked about.
  got = ReceiveAnyText(layer, set, names, {2}, 1);
  CHECK_EQ(got.messages, (std::vector<std::string>{"z:6"}));
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.messages_received, 6u);
  CHECK_EQ(s.queued, 0u);
  CHECK_CLEAN(layer);
}

TEST(receive_any_steps_over_expired_messages_and_pops_them) {
  TempName name;
  LayerOptions quick = Options(name);
  quick.expiry_ms = 30;
  Layer stale(quick);
  Layer layer(Options(name));
  std::vector<std::string> names = {"a", "b"};
  uint32_t set = layer.DefineSet(names);
  SendText(stale, "a", "old");
  SendText(stale, "b", "old");
  usleep(60'000);
  SendText(layer, "b", "fresh");
  AnyText got = ReceiveAnyText(layer, set, names, {0, 1}, 2);
  CHECK_EQ(got.messages, (std::vector<std::string>{"b:fresh"}));
  CHECK(got.still_ready.empty());
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.messages_expired, 2u);
  CHECK_EQ(s.queued, 0u);
  CHECK_CLEAN(layer);
}

TEST(receive_any_leaves_a_message_it_did_not_take_to_another_waiter) {
  TempName name;
  Layer a(Options(name)), b(Options(name));
  Layer sender(Options(name));
  std::vector<std::string> names = {"shared", "other"};
  uint32_t set = a.DefineSet(names);
  CHECK(ReceiveAnyText(a, set, names, {0, 1}, 1).messages.empty());
  CHECK(ReceiveText(b, "shared", 1).empty());
  SendText(sender, "other", "o1");
  SendText(sender, "shared", "s1");
  SendText(sender, "shared", "s2");
  (void)a.TakeBell();
  (void)b.TakeBell();
  AnyText got = ReceiveAnyText(a, set, names, {0, 1}, 1);
  CHECK_EQ(got.messages, (std::vector<std::string>{"other:o1"}));
  CHECK_EQ(got.still_ready, (std::vector<uint32_t>{0}));
  // "shared" still holds messages and a no longer waits there: b is woken for them.
  CHECK(b.TakeBell());
  CHECK_EQ(ReceiveText(b, "shared", 5), (std::vector<std::string>{"s1", "s2"}));
  CHECK_CLEAN(sender);
}

// The core keeps the heads of channels holding messages between calls; a head another receiver
// took meanwhile is noticed before anything is taken, and the order still holds.
TEST(receive_any_keeps_busy_heads_and_notices_heads_taken_by_others) {
  TempName name;
  Layer a(Options(name)), b(Options(name));
  std::vector<std::string> names = {"x", "y"};
  uint32_t set = a.DefineSet(names);
  SendText(b, "x", "x1");
  SendText(b, "x", "x2");
  SendText(b, "y", "y1");
  shmch::AnyBatch batch;
  a.ReceiveAny(set, {0, 1}, 1, batch);
  CHECK_EQ(batch.held, 2u);  // x (x2) and y (y1): no ring needed to come back to them
  CHECK_EQ(ReceiveText(b, "x", 1), (std::vector<std::string>{"x2"}));
  SendText(b, "x", "x3");
  CHECK(!a.TakeBell());  // a holds no wait on x or y now
  AnyText got = ReceiveAnyText(a, set, names, {}, 5);
  CHECK_EQ(got.messages, (std::vector<std::string>{"y:y1", "x:x3"}));
  CHECK_EQ(a.Stats().queued, 0u);
  // Both are empty now and hold our wait again.
  SendText(b, "y", "y2");
  CHECK(a.TakeBell());
  CHECK_CLEAN(a);
}

// One lock per wake-up: the set's call consumes the bell and the ready list, takes from the set's
// channels that rang without being told, and reports the others.
TEST(receive_any_answering_the_bell_consumes_it_and_reports_other_ready_channels) {
  TempName name;
  Layer a(Options(name)), sender(Options(name));
  std::vector<std::string> names = {"p", "q"};
  uint32_t set = a.DefineSet(names);
  shmch::AnyBatch batch;
  a.ReceiveAny(set, {0, 1}, 1, batch);         // both empty: both hold our wait
  CHECK(ReceiveText(a, "single", 1).empty());  // a receive() elsewhere waits too
  SendText(sender, "q", "q1");
  SendText(sender, "single", "s1");
  shmch::AnyBatch answered;
  a.ReceiveAny(set, {}, 1, answered, true);
  CHECK_EQ(answered.position_of, (std::vector<uint32_t>{1}));
  CHECK_EQ(answered.other_ready, (std::vector<std::string>{"single"}));
  CHECK(!answered.ready_overflow);
  CHECK(!a.TakeBell());
  std::vector<std::string> ready;
  CHECK(a.TakeReady(ready));
  CHECK(ready.empty());
  CHECK_EQ(ReceiveText(a, "single", 1), (std::vector<std::string>{"s1"}));
  CHECK_CLEAN(a);
}

TEST(receive_any_invalid_sets_and_positions) {
  TempName name;
  Layer layer(Options(name));
  CHECK_THROWS(layer.DefineSet({}), shmch::ErrorCode::kInvalidArgument);
  CHECK_THROWS(layer.DefineSet({"a", "a"}), shmch::ErrorCode::kInvalidArgument);
  CHECK_THROWS(layer.DefineSet({"a", "bad name"}), shmch::ErrorCode::kInvalidArgument);
  uint32_t set = layer.DefineSet({"a", "b"});
  shmch::AnyBatch batch;
  CHECK_THROWS(layer.ReceiveAny(set, {2}, 1, batch), shmch::ErrorCode::kInvalidArgument);
  CHECK_THROWS(layer.ReceiveAny(set + 1, {0}, 1, batch), shmch::ErrorCode::kInvalidArgument);
  layer.ReceiveAny(set, {1, 1, 0}, 0, batch);  // wanting nothing touches nothing
  CHECK(!HasChannel(layer, "a"));
  layer.ForgetSet(set);
  CHECK_THROWS(layer.ReceiveAny(set, {0}, 1, batch), shmch::ErrorCode::kInvalidArgument);
  CHECK_CLEAN(layer);
}

TEST(recovery_receive_any_receiver_dies_before_popping) {
  TempName name;
  Layer layer(Options(name));
  for (int i = 0; i < 6; ++i) SendText(layer, i % 2 ? "p" : "q", "m" + std::to_string(i));
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    std::vector<std::string> names = {"p", "q", "r"};
    uint32_t set = child.DefineSet(names);
    shmch::g_fault_point = 21;
    ReceiveAnyText(child, set, names, {0, 1, 2}, 4);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  std::vector<std::string> names = {"p", "q", "r"};
  uint32_t set = layer.DefineSet(names);
  AnyText got = ReceiveAnyText(layer, set, names, {0, 1, 2}, 10);  // nothing was lost, in order
  CHECK_EQ(got.messages,
           (std::vector<std::string>{"q:m0", "p:m1", "q:m2", "p:m3", "q:m4", "p:m5"}));
  CHECK_CLEAN(layer);
}

// Recovery keeps the enqueue counter above every queued message, so a scribbled counter cannot
// make new messages look older than the ones already queued.
TEST(recovery_keeps_the_enqueue_counter_above_queued_messages) {
  TempName name;
  Layer layer(Options(name));
  std::vector<std::string> names = {"old", "new"};
  uint32_t set = layer.DefineSet(names);
  for (int i = 0; i < 3; ++i) SendText(layer, "old", "o" + std::to_string(i));
  uint64_t zero = 0;
  PokeSegment(name, offsetof(shmch::Header, next_seq), &zero, sizeof zero);
  // A dead lock holder makes the next operation rebuild derived state.
  std::string how =
      DieAtFaultPoint(Options(name), 1, [&](Layer& child) { SendText(child, "elsewhere", "x"); });
  CHECK_EQ(how, std::string("SIGKILL"));
  SendText(layer, "new", "n0");
  AnyText got = ReceiveAnyText(layer, set, names, {0, 1}, 4);
  CHECK_EQ(got.messages, (std::vector<std::string>{"old:o0", "old:o1", "old:o2", "new:n0"}));
  CHECK_CLEAN(layer);
}
