// Large payloads, copied outside the segment lock (payload.cc): both paths, and a death at each
// step.
#include "checksum.h"
#include "harness.h"

// ---------------------------------------------------------------------------------------------
// Large payloads copied outside the segment lock (payload.cc): the steps and a death at each.

namespace {

constexpr uint32_t kLargeTestBytes = 100'000;  // above kOutOfLockBytes, below Options' 256 KiB

void SendLarge(Layer& layer, std::string_view channel, uint32_t id) {
  auto p = Payload(id, kLargeTestBytes);
  layer.Send(channel, p.data(), kLargeTestBytes);
}

// The ids of the large messages received (each checked byte for byte against Payload(id)).
std::vector<uint32_t> ReceiveLarge(Layer& layer, const std::string& channel, uint32_t wanted) {
  shmch::ReceivedBatch batch;
  layer.Receive({{channel, wanted}}, batch);
  std::vector<uint32_t> ids;
  size_t at = 0;
  for (uint32_t length : batch.length_of) {
    if (length != kLargeTestBytes)
      throw std::runtime_error("a large message of " + std::to_string(length) + " bytes");
    uint32_t id = 0;
    for (; id < 64; ++id) {
      auto p = Payload(id, kLargeTestBytes);
      if (std::memcmp(batch.bytes.data() + at, p.data(), kLargeTestBytes) == 0) break;
    }
    ids.push_back(id);
    at += length;
  }
  return ids;
}

}  // namespace

// Copies made with no lock held go in slices (yielding the CPU between them): the bytes and the
// checksum are those of one copy, whatever the length against the slice size (512 KiB).
TEST(large_copy_in_slices_gives_the_bytes_and_checksum_of_one_copy) {
  const size_t slice = 512 * 1024;
  for (size_t length : {size_t{0}, size_t{1}, slice - 1, slice, slice + 1, 3 * slice + 7,
                        size_t{5} << 20}) {
    std::vector<uint8_t> source(length), into(length + 1, 0xee), whole(length);
    for (size_t i = 0; i < length; ++i) source[i] = static_cast<uint8_t>(i * 131 + (i >> 9));
    const uint32_t expected = shmch::CopyWithCrc32c(whole.data(), source.data(), length);
    CHECK_EQ(shmch::CopyWithCrc32cYielding(into.data(), source.data(), length), expected);
    CHECK(std::equal(source.begin(), source.end(), into.begin()));
    CHECK_EQ(into[length], 0xee);  // nothing written past the end
    // Chained after earlier bytes, as the pieces of one message are.
    const uint32_t first = shmch::Crc32c(source.data(), length / 3);
    CHECK_EQ(shmch::CopyWithCrc32cYielding(into.data(), source.data() + length / 3,
                                           length - length / 3, first),
             expected);
  }
}

TEST(large_send_and_receive_round_trip_and_free_their_blocks) {
  TempName name;
  Layer layer(Options(name));
  static_assert(kLargeTestBytes >= shmch::kOutOfLockBytes, "the test must take the large path");
  for (uint32_t id = 0; id < 5; ++id) SendLarge(layer, "big", id);
  SendText(layer, "big", "small");  // the two paths keep one order
  SendLarge(layer, "big", 5);
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveLarge(layer, "big", 3), (std::vector<uint32_t>{0, 1, 2}));
  CHECK_CLEAN(layer);
  shmch::ReceivedBatch batch;
  layer.Receive({{"big", 4}}, batch);
  CHECK_EQ(batch.length_of,
           (std::vector<uint32_t>{kLargeTestBytes, kLargeTestBytes, 5, kLargeTestBytes}));
  auto p4 = Payload(4, kLargeTestBytes);
  CHECK(std::memcmp(batch.bytes.data() + kLargeTestBytes, p4.data(), kLargeTestBytes) == 0);
  CHECK(std::memcmp(batch.bytes.data() + 2 * kLargeTestBytes, "small", 5) == 0);
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.messages_sent, 7u);
  CHECK_EQ(s.messages_received, 7u);
  CHECK_EQ(s.arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(large_send_refuses_a_full_channel_before_copying) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 2;
  Layer layer(o);
  SendLarge(layer, "big", 0);
  SendLarge(layer, "big", 1);
  bool refused = false;
  try {
    SendLarge(layer, "big", 2);
  } catch (const Error& e) {
    refused = e.code() == ErrorCode::kChannelFull;
  }
  CHECK(refused);
  CHECK_EQ(layer.Stats().sends_refused_full, 1u);
  CHECK_EQ(layer.Stats().arena_used_bytes, 2u * ((kLargeTestBytes + 32 + 63) / 64 * 64));
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveLarge(layer, "big", 5), (std::vector<uint32_t>{0, 1}));
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
}

TEST(large_send_copies_without_holding_the_lock) {
  // The sender stops itself after its copy, before publishing: the lock is free all that time, so
  // others send and receive; the message appears only when it is published.
  TempName name;
  Layer layer(Options(name));
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    Layer child(Options(name));
    shmch::g_fault_action = shmch::FaultAction::kStop;
    shmch::g_fault_point = 23;
    SendLarge(child, "big", 7);
    _exit(0);
  }
  int status = 0;
  CHECK(waitpid(pid, &status, WUNTRACED) == pid);
  CHECK(WIFSTOPPED(status));
  layer.SetLockWait(100'000'000);  // 100 ms: a holder stopped inside the lock would be kBusy
  SendText(layer, "small", "passes");
  CHECK_EQ(ReceiveText(layer, "small", 5), std::vector<std::string>{"passes"});
  CHECK(ReceiveLarge(layer, "big", 5).empty());  // reserved, not published
  CHECK_CLEAN(layer);
  kill(pid, SIGCONT);
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK_EQ(ReceiveLarge(layer, "big", 5), std::vector<uint32_t>{7});
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(recovery_large_sender_dies_holding_a_reserved_block) {
  TempName name;
  Layer layer(Options(name));
  SendLarge(layer, "big", 0);
  const uint64_t used = layer.Stats().arena_used_bytes;
  std::string how = DieAtFaultPoint(Options(name), 22, [&](Layer& child) {
    // inside the lock: block reserved and held, nothing copied
    SendLarge(child, "big", 1);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);  // takes the lock over and recovers: the dead slot's hold is released
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  CHECK_EQ(layer.Stats().arena_used_bytes, used);
  CHECK_EQ(ReceiveLarge(layer, "big", 5), std::vector<uint32_t>{0});
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(recovery_large_sender_dies_between_copy_and_publish) {
  TempName name;
  Layer layer(Options(name));
  SendLarge(layer, "big", 0);
  const uint64_t used = layer.Stats().arena_used_bytes;
  std::string how = DieAtFaultPoint(Options(name), 23, [&](Layer& child) {
    // outside the lock: copied, not published
    SendLarge(child, "big", 1);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);  // no lock was held: the dead slot still holds its block, consistently
  CHECK_EQ(layer.Stats().lock_recoveries, 0u);
  CHECK(layer.Stats().arena_used_bytes > used);
  layer.Maintain();  // reclaims the dead slot, and its hold with it
  CHECK_EQ(layer.Stats().arena_used_bytes, used);
  CHECK_EQ(layer.Stats().slots_attached, 1u);
  CHECK_EQ(ReceiveLarge(layer, "big", 5), std::vector<uint32_t>{0});
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(recovery_large_sender_dies_after_linking_before_dropping_its_hold) {
  TempName name;
  Layer layer(Options(name));
  SendLarge(layer, "big", 0);
  std::string how = DieAtFaultPoint(Options(name), 24, [&](Layer& child) {
    // inside the lock: queued, the hold still recorded
    SendLarge(child, "big", 1);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  CHECK_EQ(layer.Stats().queued, 2u);
  CHECK_EQ(ReceiveLarge(layer, "big", 5), (std::vector<uint32_t>{0, 1}));  // it was published
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);  // and its block freed once, by the receive
  CHECK_CLEAN(layer);
}

TEST(recovery_large_receiver_dies_after_popping_before_copying) {
  TempName name;
  Layer layer(Options(name));
  for (uint32_t id = 0; id < 5; ++id) SendLarge(layer, "big", id);
  std::string how = DieAtFaultPoint(Options(name), 25, [&](Layer& child) {
    // inside the lock: two popped into holds, nothing copied
    ReceiveLarge(child, "big", 2);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  // What it popped went with it (at most once); the rest is intact and nothing leaked.
  CHECK_EQ(ReceiveLarge(layer, "big", 5), (std::vector<uint32_t>{2, 3, 4}));
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(recovery_large_receiver_dies_after_copying_before_releasing) {
  TempName name;
  Layer layer(Options(name));
  for (uint32_t id = 0; id < 3; ++id) SendLarge(layer, "big", id);
  std::string how = DieAtFaultPoint(Options(name), 26, [&](Layer& child) {
    // outside the lock: copied out, holds not released
    ReceiveLarge(child, "big", 1);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  CHECK_EQ(layer.Stats().lock_recoveries, 0u);
  layer.Maintain();  // reclaims the dead slot and releases its hold
  CHECK_EQ(ReceiveLarge(layer, "big", 5), (std::vector<uint32_t>{1, 2}));
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(large_receive_any_copies_outside_the_lock_in_order) {
  TempName name;
  Layer layer(Options(name));
  SendLarge(layer, "p", 0);
  SendText(layer, "q", "small");
  SendLarge(layer, "p", 1);
  std::vector<std::string> names = {"p", "q"};
  uint32_t set = layer.DefineSet(names);
  shmch::AnyBatch batch;
  layer.ReceiveAny(set, {0, 1}, 3, batch);
  CHECK_EQ(batch.position_of, (std::vector<uint32_t>{0, 1, 0}));
  CHECK_EQ(batch.length_of, (std::vector<uint32_t>{kLargeTestBytes, 5, kLargeTestBytes}));
  auto p0 = Payload(0, kLargeTestBytes), p1 = Payload(1, kLargeTestBytes);
  CHECK(std::memcmp(batch.bytes.data(), p0.data(), kLargeTestBytes) == 0);
  CHECK(std::memcmp(batch.bytes.data() + kLargeTestBytes, "small", 5) == 0);
  CHECK(std::memcmp(batch.bytes.data() + kLargeTestBytes + 5, p1.data(), kLargeTestBytes) == 0);
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(recovery_large_receive_any_dies_after_popping_before_copying) {
  TempName name;
  Layer layer(Options(name));
  for (uint32_t id = 0; id < 4; ++id) SendLarge(layer, "p", id);
  std::string how = DieAtFaultPoint(Options(name), 25, [&](Layer& child) {
    // inside the lock: popped into holds, nothing copied
    std::vector<std::string> names = {"p"};
    uint32_t set = child.DefineSet(names);
    shmch::AnyBatch batch;
    child.ReceiveAny(set, {0}, 2, batch);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  CHECK_EQ(ReceiveLarge(layer, "p", 5), (std::vector<uint32_t>{2, 3}));  // the rest, intact
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(large_receive_reports_a_payload_damaged_in_shared_memory) {
  TempName name;
  Layer layer(Options(name));
  SendLarge(layer, "big", 0);
  SendText(layer, "big", "after");
  // Flip a byte in the middle of the first block's payload (the arena's first pages).
  {
    shmch::SegmentConfig config = Options(name).segment;
    config.create = false;
    shmch::Segment view(config);
    view.page(0)[sizeof(shmch::BlockHeader) + kLargeTestBytes / 2] ^= 0xff;
  }
  shmch::ReceivedBatch batch;
  layer.Receive({{"big", 2}}, batch);
  CHECK_EQ(batch.length_of, (std::vector<uint32_t>{shmch::kDamagedMessage, 5}));
  CHECK_EQ(batch.bytes.size(), size_t{5});  // the damaged payload's bytes left the batch
  CHECK(std::memcmp(batch.bytes.data(), "after", 5) == 0);
  CHECK_EQ(layer.Stats().messages_damaged, 1u);
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

// ---------------------------------------------------------------------------------------------
