// Queues: send and receive, order, capacity, expiry, batches, bad arguments, stats.
#include "harness.h"

// ---------------------------------------------------------------------------------------------
// Queues.

TEST(queue_send_receive_in_order) {
  TempName name;
  Layer layer(Options(name));
  for (int i = 0; i < 50; ++i) SendText(layer, "q", "m" + std::to_string(i));
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveText(layer, "q", 20), Texts("m", 0, 20));
  CHECK_EQ(ReceiveText(layer, "q", 100), Texts("m", 20, 50));
  CHECK(ReceiveText(layer, "q", 5).empty());
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.messages_sent, 50u);
  CHECK_EQ(s.messages_received, 50u);
  CHECK_EQ(s.queued, 0u);
  CHECK_EQ(s.arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(queue_payloads_of_many_sizes_survive) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 1000;
  Layer layer(o);
  const uint32_t sizes[] = {1, 47, 48, 49, 63, 64, 65, 1000, 4096, 65536, 200000};
  uint32_t id = 0;
  for (uint32_t size : sizes) {
    auto p = Payload(id++, size);
    layer.Send("sizes", p.data(), size);
  }
  CHECK_CLEAN(layer);
  shmch::ReceivedBatch batch;
  layer.Receive({{"sizes", 100}}, batch);
  CHECK_EQ(batch.length_of.size(), std::size(sizes));
  size_t at = 0;
  for (uint32_t i = 0; i < std::size(sizes); ++i) {
    CHECK_EQ(batch.length_of[i], sizes[i]);
    auto expected = Payload(i, sizes[i]);
    CHECK(std::equal(expected.begin(), expected.end(), batch.bytes.begin() + at));
    at += sizes[i];
  }
  CHECK_CLEAN(layer);
}

// Zero-length messages are legal (a custom serializer may produce them), and an empty buffer's
// data pointer may be null, as std::vector's and an empty Uint8Array's are. Runs in a child
// process with stderr silenced, so a sanitizer abort is a plain failure here.
static void EmptyPayloadsBody() {
  TempName name;
  std::string how = RunChild(
      [&] {
        Layer layer(Options(name));
        std::vector<uint8_t> empty;
        layer.Send("empty", empty.data(), 0);
        layer.Send("empty", empty.data(), 0);
        shmch::ReceivedBatch batch;
        layer.Receive({{"empty", 5}}, batch);
        if (batch.length_of != std::vector<uint32_t>{0, 0} || !batch.bytes.empty()) _exit(6);
        if (!layer.Verify().empty()) _exit(7);
        _exit(0);
      },
      true);
  CHECK_EQ(how, std::string("exit 0"));
}
// Regression: Send() -> StoreBlock() called memcpy(payload, nullptr, 0) and Receive() called
// memcpy(out.bytes.data() /* nullptr */, ..., 0): undefined behaviour, which UBSan reports as "null
// pointer passed as argument 1/2, which is declared to never be null".
TEST(queue_empty_payloads) { EmptyPayloadsBody(); }

TEST(queue_two_instances_share_one_segment) {
  TempName name;
  Layer a(Options(name));
  Layer b(Options(name));
  CHECK(a.slot_index() != b.slot_index());
  CHECK_EQ(a.Stats().slots_attached, 2u);
  SendText(a, "shared", "from a");
  SendText(b, "shared", "from b");
  CHECK_EQ(ReceiveText(b, "shared", 10), (std::vector<std::string>{"from a", "from b"}));
  CHECK_CLEAN(a);
  b.Close();
  CHECK_THROWS(SendText(b, "shared", "x"), ErrorCode::kClosed);
  CHECK_EQ(a.Stats().slots_attached, 1u);
  CHECK_CLEAN(a);
}

TEST(queue_batch_receive_over_several_channels) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "a", "a0");
  SendText(layer, "a", "a1");
  SendText(layer, "a", "a2");
  SendText(layer, "b", "b0");
  shmch::ReceivedBatch batch;
  layer.Receive({{"a", 2}, {"b", 3}, {"c", 1}}, batch);
  CHECK_EQ(batch.request_of, (std::vector<uint32_t>{0, 0, 1}));
  CHECK_EQ(batch.length_of, (std::vector<uint32_t>{2, 2, 2}));
  CHECK_EQ(std::string(batch.bytes.begin(), batch.bytes.end()), std::string("a0a1b0"));
  // Short requests ("b", "c") registered this instance as a waiter: their records exist.
  CHECK(HasChannel(layer, "c"));
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveText(layer, "a", 5), (std::vector<std::string>{"a2"}));
  CHECK_CLEAN(layer);
}

// Regression (layer.cc, Layer::Receive): a request with wanted == 0 took the "satisfied" branch,
// which cleared our waiter bit on segment_->channel(index) without checking index: for a channel
// that does not exist (index == kNil) it threw kCorrupt although the segment was fine.
TEST(queue_receive_wanting_nothing_from_an_unknown_channel) {
  TempName name;
  Layer layer(Options(name));
  shmch::ReceivedBatch batch;
  layer.Receive({{"unknown", 0}}, batch);
  CHECK(batch.request_of.empty());
  SendText(layer, "known", "x");
  layer.Receive({{"known", 0}}, batch);
  CHECK(batch.request_of.empty());
  CHECK_CLEAN(layer);
}

TEST(queue_capacity_gives_channel_full) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 5;
  o.channel_capacity = {{"big.*", 8}, {"big.small", 1}};  // first match wins
  Layer layer(o);
  for (int i = 0; i < 5; ++i) SendText(layer, "small", "s" + std::to_string(i));
  CHECK_THROWS(SendText(layer, "small", "s5"), ErrorCode::kChannelFull);
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveText(layer, "small", 1), (std::vector<std::string>{"s0"}));
  SendText(layer, "small", "s5");
  CHECK_THROWS(SendText(layer, "small", "s6"), ErrorCode::kChannelFull);
  CHECK_EQ(ReceiveText(layer, "small", 10), Texts("s", 1, 6));

  for (int i = 0; i < 8; ++i) SendText(layer, "big.small", "b" + std::to_string(i));
  CHECK_THROWS(SendText(layer, "big.small", "b8"), ErrorCode::kChannelFull);
  // A refused send to a channel nobody else uses leaves no record behind.
  CHECK_THROWS(SendText(layer, "other", std::string(300u << 10, 'x')), ErrorCode::kTooLarge);
  CHECK(!HasChannel(layer, "other"));
  CHECK_EQ(layer.Stats().queued, 8u);
  CHECK_CLEAN(layer);
}

// backpressure.h: a producer retrying on a full channel gives its CPU to the receivers from the
// second refusal in a row on; a one-off refusal, a refusal for another reason and any queued
// message reset that.
TEST(queue_repeated_refusals_yield_the_cpu) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 1;
  Layer layer(o);
  SendText(layer, "full", "queued");
  CHECK_THROWS(SendText(layer, "full", "refused"), ErrorCode::kChannelFull);
  CHECK_EQ(layer.refusal_yields(), 0u);
  CHECK_THROWS(SendText(layer, "full", "refused"), ErrorCode::kChannelFull);
  CHECK_THROWS(SendText(layer, "full", "refused"), ErrorCode::kChannelFull);
  CHECK_EQ(layer.refusal_yields(), 2u);
  // Not for lack of room: no yield, and the streak goes on.
  CHECK_THROWS(SendText(layer, "other", std::string(300u << 10, 'x')), ErrorCode::kTooLarge);
  CHECK_EQ(layer.refusal_yields(), 2u);
  CHECK_EQ(ReceiveText(layer, "full", 1), (std::vector<std::string>{"queued"}));
  SendText(layer, "full", "queued again");  // a queued message ends the streak
  CHECK_THROWS(SendText(layer, "full", "refused"), ErrorCode::kChannelFull);
  CHECK_EQ(layer.refusal_yields(), 2u);
  CHECK_THROWS(SendText(layer, "full", "refused"), ErrorCode::kChannelFull);
  CHECK_EQ(layer.refusal_yields(), 3u);
  // The lock is free again after every refusal: another instance sends at once.
  Layer other(Options(name));
  SendText(other, "elsewhere", "x");
  CHECK_CLEAN(layer);
}

// The binding's send path: a full channel is an outcome (with the capacity for the message),
// counted like a thrown refusal, and leaves the queue as it was.
// A payload in pieces (the serializer's bytes around a large value it left uncopied) is stored
// as their concatenation with the CRC of the whole, small (under the lock) and large (outside).
TEST(queue_payload_in_pieces_arrives_whole) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 10;
  Layer layer(o);
  for (uint32_t large : {uint32_t{1000}, shmch::kOutOfLockBytes + 12345}) {
    auto head = Payload(1, 7), body = Payload(2, large), tail = Payload(3, 0), end = Payload(4, 33);
    const shmch::PayloadPiece pieces[] = {{head.data(), 7},
                                          {body.data(), large},
                                          {tail.data(), 0},
                                          {end.data(), 33}};
    uint32_t capacity = 0;
    CHECK(layer.TrySendPieces("pieces", pieces, 4, capacity) == shmch::SendOutcome::kQueued);
    std::vector<uint8_t> whole(head);
    whole.insert(whole.end(), body.begin(), body.end());
    whole.insert(whole.end(), end.begin(), end.end());
    shmch::ReceivedBatch batch;
    layer.Receive({{"pieces", 1}}, batch);
    CHECK_EQ(batch.length_of.size(), 1u);
    CHECK_EQ(batch.length_of[0], static_cast<uint32_t>(whole.size()));  // not damaged: CRC whole
    CHECK(std::equal(whole.begin(), whole.end(), batch.bytes.begin()));
  }
  // Pieces adding up past maxMessageSize are refused as one message would be.
  const uint32_t half = o.segment.max_message_size / 2 + 1;  // each piece fits, the two do not
  auto big = Payload(5, half);
  const shmch::PayloadPiece two[] = {{big.data(), half}, {big.data(), half}};
  uint32_t capacity = 0;
  bool refused = false;
  try {
    layer.TrySendPieces("pieces", two, 2, capacity);
  } catch (const shmch::Error& e) {
    refused = e.code() == shmch::ErrorCode::kTooLarge;
  }
  CHECK(refused);
  CHECK_EQ(layer.Stats().queued, 0u);
  CHECK_CLEAN(layer);
}

// A retry of a refused large message asks first whether it would be refused again.
TEST(queue_refuses_as_full_answers_as_a_send_would_without_sending) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 2;
  Layer layer(o);
  const uint8_t byte = 'x';
  uint32_t capacity = 0;
  CHECK(!layer.RefusesAsFull("q", capacity));  // no record: room, and none is made
  CHECK_EQ(layer.Stats().channels, 0u);
  layer.Send("q", &byte, 1);
  CHECK(!layer.RefusesAsFull("q", capacity));
  layer.Send("q", &byte, 1);
  CHECK(layer.RefusesAsFull("q", capacity));
  CHECK_EQ(capacity, 2u);
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.queued, 2u);  // nothing sent
  CHECK_EQ(s.sends_refused_full, 1u);  // counted as the refusal it stands for
  CHECK_EQ(ReceiveText(layer, "q", 1).size(), 1u);
  CHECK(!layer.RefusesAsFull("q", capacity));
  CHECK_CLEAN(layer);
}

// A retry loop asks again and again while the channel stays full: answered without the lock
// while nothing was taken since the last refusal; a take, an expired head or another channel
// takes the lock again. The refusals answered so are counted all the same.
TEST(queue_refuses_as_full_again_without_the_lock_until_something_is_taken) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 2;
  Layer layer(o);
  Layer receiver(Options(name));
  const uint8_t byte = 'x';
  uint32_t capacity = 0;
  layer.Send("q", &byte, 1);
  layer.Send("q", &byte, 1);
  CHECK(layer.TrySend("q", &byte, 1, capacity) == shmch::SendOutcome::kFull);
  layer.ResetLockHold();
  for (int i = 0; i < 10; ++i) {
    capacity = 0;
    CHECK(layer.RefusesAsFull("q", capacity));
    CHECK_EQ(capacity, 2u);
  }
  CHECK_EQ(layer.lock_hold()[shmch::LockOp::kSend].count(), 0u);
  CHECK_EQ(layer.Stats().sends_refused_full, 11u);
  // Another channel is looked at under the lock.
  CHECK(!layer.RefusesAsFull("other", capacity));
  CHECK_EQ(layer.lock_hold()[shmch::LockOp::kSend].count(), 1u);
  // Another process takes the head: room, seen at once.
  CHECK_EQ(ReceiveText(receiver, "q", 1).size(), 1u);
  CHECK(!layer.RefusesAsFull("q", capacity));
  layer.Send("q", &byte, 1);
  CHECK(layer.RefusesAsFull("q", capacity));  // full again, found under the lock
  // The head taken and another node put in its place (a reused node index): its seq differs.
  CHECK_EQ(ReceiveText(receiver, "q", 1).size(), 1u);
  layer.Send("q", &byte, 1);
  CHECK(layer.RefusesAsFull("q", capacity));
  CHECK_CLEAN(layer);
}

// Expired messages make room once a look under the lock drops them: the hint never says full
// past the head's expiry.
TEST(queue_refuses_as_full_without_the_lock_stops_at_the_heads_expiry) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 1;
  o.expiry_ms = 50;
  Layer layer(o);
  const uint8_t byte = 'x';
  uint32_t capacity = 0;
  layer.Send("q", &byte, 1);
  CHECK(layer.RefusesAsFull("q", capacity));
  CHECK(layer.RefusesAsFull("q", capacity));
  usleep(80'000);
  CHECK(!layer.RefusesAsFull("q", capacity));
  CHECK_CLEAN(layer);
}

TEST(queue_try_send_reports_a_full_channel_without_throwing) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 2;
  Layer layer(o);
  const uint8_t byte = 'x';
  uint32_t capacity = 0;
  CHECK(layer.TrySend("q", &byte, 1, capacity) == shmch::SendOutcome::kQueued);
  CHECK(layer.TrySend("q", &byte, 1, capacity) == shmch::SendOutcome::kQueued);
  CHECK(layer.TrySend("q", &byte, 1, capacity) == shmch::SendOutcome::kFull);
  CHECK_EQ(capacity, 2u);
  // A payload copied outside the lock is refused before its copy, the same way.
  const std::string large(shmch::kOutOfLockBytes, 'L');
  capacity = 0;
  CHECK(layer.TrySend("q", reinterpret_cast<const uint8_t*>(large.data()),
                      static_cast<uint32_t>(large.size()),
                      capacity) == shmch::SendOutcome::kFull);
  CHECK_EQ(capacity, 2u);
  CHECK(layer.TrySend("reply.nobody9!abc", &byte, 1, capacity) == shmch::SendOutcome::kOrphaned);
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.queued, 2u);
  CHECK_EQ(s.sends_refused_full, 2u);
  CHECK_EQ(s.messages_orphaned, 1u);
  // Other refusals still throw.
  CHECK_THROWS(layer.TrySend("bad name", &byte, 1, capacity), ErrorCode::kInvalidArgument);
  CHECK_EQ(ReceiveText(layer, "q", 5), (std::vector<std::string>{"x", "x"}));
  CHECK_CLEAN(layer);
}

TEST(queue_expiry_drops_old_messages) {
  TempName name;
  LayerOptions o = Options(name);
  o.expiry_ms = 300;  // long enough that the first sends are still fresh on a loaded machine
  o.capacity = 3;
  Layer layer(o);
  for (int i = 0; i < 3; ++i) SendText(layer, "old", "x");
  CHECK_THROWS(SendText(layer, "old", "x"), ErrorCode::kChannelFull);
  usleep(350'000);
  // Expired heads are dropped on send, so the channel has room again.
  SendText(layer, "old", "fresh-but-expiring");
  usleep(350'000);
  CHECK(ReceiveText(layer, "old", 10).empty());
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.messages_expired, 4u);
  CHECK_EQ(s.messages_received, 0u);
  CHECK_EQ(s.queued, 0u);
  CHECK_EQ(s.arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(queue_expiry_is_per_message) {
  TempName name;
  LayerOptions slow = Options(name);
  LayerOptions fast = Options(name);
  fast.expiry_ms = 1;
  Layer a(slow);
  Layer b(fast);
  SendText(b, "mixed", "short-lived");
  SendText(a, "mixed", "long-lived");
  usleep(20'000);
  CHECK_EQ(ReceiveText(a, "mixed", 10), (std::vector<std::string>{"long-lived"}));
  CHECK_EQ(a.Stats().messages_expired, 1u);
  CHECK_CLEAN(a);
}

TEST(queue_invalid_arguments) {
  TempName name;
  Layer layer(Options(name));
  CHECK_THROWS(SendText(layer, "", "x"), ErrorCode::kInvalidArgument);
  CHECK_THROWS(SendText(layer, "a b", "x"), ErrorCode::kInvalidArgument);
  CHECK_THROWS(SendText(layer, "a!b!c", "x"), ErrorCode::kInvalidArgument);
  CHECK_THROWS(SendText(layer, std::string(shmch::kMaxNameLength + 1, 'a'), "x"),
               ErrorCode::kInvalidArgument);
  SendText(layer, std::string(shmch::kMaxNameLength, 'a'), "longest name");
  SendText(layer, "process.local!abc", "one bang is fine");
  CHECK_THROWS(layer.GroupAdd("g!x", "c"), ErrorCode::kInvalidArgument);
  CHECK_THROWS(GroupSendText(layer, "", "x"), ErrorCode::kInvalidArgument);
  CHECK_THROWS(SendText(layer, "c", std::string((256u << 10) + 1, 'x')), ErrorCode::kTooLarge);
  CHECK_THROWS(Layer::ValidateName("x y", true, "channel"), ErrorCode::kInvalidArgument);
  CHECK_THROWS(shmch::Segment::ValidateLayerName("bad/name"), ErrorCode::kInvalidArgument);
  CHECK_CLEAN(layer);
  layer.Close();
  CHECK_THROWS(SendText(layer, "c", "x"), ErrorCode::kClosed);
  CHECK_THROWS(layer.Verify(), ErrorCode::kClosed);
}

TEST(queue_doorbell_rings_a_waiting_instance) {
  TempName name;
  Layer receiver(Options(name));
  Layer sender(Options(name));
  CHECK(ReceiveText(receiver, "bell", 1).empty());  // registers the receiver as a waiter
  SendText(sender, "bell", "ding");
  CHECK(receiver.TakeBell());
  CHECK(!receiver.TakeBell());
  CHECK_EQ(ReceiveText(receiver, "bell", 1), (std::vector<std::string>{"ding"}));
  CHECK_CLEAN(sender);
}

// A receive cancelled in JS without its wait being withdrawn left the record pinned forever: the
// next Maintain, told what this instance still waits on, drops the rest.
TEST(maintain_drops_waits_the_instance_no_longer_has) {
  TempName name;
  Layer receiver(Options(name));
  Layer other(Options(name));
  for (int i = 0; i < 10; ++i) CHECK(ReceiveText(receiver, "w" + std::to_string(i), 1).empty());
  CHECK(ReceiveText(other, "w0", 1).empty());  // another instance's wait is not ours to drop
  CHECK_EQ(receiver.Stats().channels, 10u);
  std::vector<std::string> still_waiting{"w3", "never-registered"};
  CHECK(receiver.Maintain(&still_waiting));
  CHECK_EQ(receiver.Stats().channels, 2u);
  CHECK(HasChannel(receiver, "w0"));
  CHECK(HasChannel(receiver, "w3"));
  // The kept wait still works: a send rings the receiver.
  SendText(other, "w3", "kept");
  CHECK(receiver.TakeBell());
  CHECK_EQ(ReceiveText(receiver, "w3", 1), (std::vector<std::string>{"kept"}));
  // Without a list Maintain leaves waits alone.
  CHECK(other.Maintain());
  CHECK(HasChannel(other, "w0"));
  std::vector<std::string> none;
  CHECK(other.Maintain(&none));
  CHECK_EQ(other.Stats().channels, 0u);
  CHECK_CLEAN(receiver);
}

// Issue 14: every delivery the layer does not make is counted where an operator can see it.
TEST(stats_count_skipped_refused_and_orphaned_deliveries) {
  TempName name;
  LayerOptions options = Options(name);
  options.capacity = 1;
  Layer layer(options);
  LayerOptions owner_options = Options(name);
  owner_options.client_id = "owner1";
  auto owner = std::make_unique<Layer>(owner_options);
  layer.GroupAdd("room", "a");
  layer.GroupAdd("room", "b");
  SendText(layer, "a", "fills a");
  CHECK_EQ(GroupSendText(layer, "room", "g"), 1u);  // b only: a is full
  CHECK_THROWS(SendText(layer, "a", "refused"), ErrorCode::kChannelFull);
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.deliveries_skipped_full, 1u);
  CHECK_EQ(s.sends_refused_full, 1u);
  CHECK_EQ(s.messages_orphaned, 0u);
  // A live instance's '!' channel queues; one of no attached instance drops and counts.
  CHECK(layer.Send("reply.owner1!abc", reinterpret_cast<const uint8_t*>("x"), 1));
  CHECK(!layer.Send("reply.nobody9!abc", reinterpret_cast<const uint8_t*>("x"), 1));
  CHECK(!HasChannel(layer, "reply.nobody9!abc"));
  CHECK_EQ(layer.Stats().messages_orphaned, 1u);
  // The owner goes away with a message queued: reclaiming its channel counts that message.
  owner->Close();
  owner.reset();
  CHECK_EQ(layer.Stats().messages_orphaned, 2u);
  CHECK(!HasChannel(layer, "reply.owner1!abc"));
  CHECK(!layer.Send("reply.owner1!abc", reinterpret_cast<const uint8_t*>("y"), 1));
  CHECK_EQ(layer.Stats().messages_orphaned, 3u);
  CHECK_CLEAN(layer);
}

TEST(release_channel_drops_messages_memberships_and_record) {
  TempName name;
  LayerOptions options = Options(name);
  options.client_id = "me1";
  Layer layer(options);
  layer.GroupAdd("room", "inbox.me1!x");
  layer.GroupAdd("lobby", "inbox.me1!x");
  SendText(layer, "inbox.me1!x", "one");
  CHECK_EQ(GroupSendText(layer, "room", "two"), 1u);
  CHECK_EQ(layer.ReleaseChannel("inbox.me1!x"), 2u);
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.channels, 0u);
  CHECK_EQ(s.members, 0u);
  CHECK_EQ(s.groups, 0u);
  CHECK_EQ(s.queued, 0u);
  CHECK_EQ(s.arena_used_bytes, 0u);
  CHECK_EQ(s.messages_orphaned, 2u);
  CHECK_EQ(layer.ReleaseChannel("inbox.me1!x"), 0u);  // twice is harmless
  CHECK_CLEAN(layer);
}
