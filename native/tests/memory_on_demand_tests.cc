// Memory on demand: the segment occupies in /dev/shm what it holds; tables and arena grow in steps.
#include "harness.h"

// ---------------------------------------------------------------------------------------------
// Memory on demand: what the segment occupies in /dev/shm follows what it holds.

namespace {

uint64_t ShmBytesOf(const TempName& name) {
  struct stat st;
  if (stat(name.path().c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

// A layer whose arena has many chunks, with small tables.
LayerOptions RoomyOptions(const TempName& name) {
  LayerOptions o = Options(name);
  o.segment.size = 24u << 20;
  o.segment.max_message_size = 4u << 20;
  o.capacity = 1000;
  return o;
}

}  // namespace

TEST(memory_on_demand_open_reserves_only_the_fixed_part) {
  TempName name;
  Layer layer(RoomyOptions(name));
  uint64_t at_open = ShmBytesOf(name);
  CHECK(at_open > 0);
  CHECK(at_open < (1u << 20));  // header, slots, buckets, bitmap: not the 24 MiB
  CHECK_EQ(layer.Stats().shm_bytes, at_open);
  SendText(layer, "a", "first");  // a channel step, a node step and one arena chunk
  uint64_t after = ShmBytesOf(name);
  CHECK(after > at_open);
  CHECK(after < at_open + (2u << 20));
  CHECK_CLEAN(layer);
}

TEST(memory_on_demand_arena_grows_with_messages_and_is_given_back) {
  TempName name;
  Layer layer(RoomyOptions(name));
  SendText(layer, "warm", "x");
  ReceiveText(layer, "warm", 1);
  uint64_t base = ShmBytesOf(name);
  const uint32_t size = 1u << 20;
  for (uint32_t i = 0; i < 12; ++i) {
    auto p = Payload(i, size);
    layer.Send("big", p.data(), size);
  }
  CHECK(ShmBytesOf(name) >= base + 12ull * size);
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveText(layer, "big", 100).size(), 12u);
  // The warm reserve keeps what the busy period's peak used (12 messages) and 2 MiB, no more.
  uint64_t busy = ShmBytesOf(name);
  CHECK(busy <= base + 12ull * size + (3u << 20));
  CHECK_CLEAN(layer);
  // A second round of the same reuses it: nothing new is reserved.
  for (uint32_t i = 0; i < 12; ++i) {
    auto p = Payload(i, size);
    layer.Send("big", p.data(), size);
  }
  CHECK(ShmBytesOf(name) <= busy);
  CHECK_EQ(ReceiveText(layer, "big", 100).size(), 12u);
  CHECK_CLEAN(layer);
  // The rest goes when the layer is idle (a housekeeping round with no send since the last).
  layer.Maintain();
  layer.Maintain();
  CHECK(ShmBytesOf(name) <= base);
  CHECK_CLEAN(layer);
  auto p = Payload(99, size);
  layer.Send("big", p.data(), size);  // and is reserved again when needed
  CHECK_EQ(ReceiveText(layer, "big", 1).size(), 1u);
  CHECK_CLEAN(layer);
}

TEST(memory_on_demand_last_process_out_gives_back_empty_memory) {
  TempName name;
  uint64_t base;
  {
    Layer layer(RoomyOptions(name));
    SendText(layer, "keep", "stays queued");
    base = ShmBytesOf(name);
    const uint32_t size = 3u << 20;
    auto p = Payload(1, size);
    layer.Send("big", p.data(), size);
    CHECK_EQ(ReceiveText(layer, "big", 1).size(), 1u);
    CHECK(ShmBytesOf(name) > base + (2u << 20));  // within the keep-empty budget
  }
  CHECK(ShmBytesOf(name) <= base);
  Layer again(RoomyOptions(name));
  CHECK_EQ(ReceiveText(again, "keep", 1), std::vector<std::string>{"stays queued"});
  CHECK_CLEAN(again);
}

TEST(memory_on_demand_tables_grow_in_steps_up_to_their_limits) {
  TempName name;
  LayerOptions o = RoomyOptions(name);
  o.segment.max_channels = 3000;  // several steps of 256 KiB
  o.segment.max_members = 20000;
  o.segment.max_nodes = 4096;
  Layer layer(o);
  Layer peer(o);  // sees the others' growth at its next lock
  for (int i = 0; i < 3000; ++i) SendText(i % 2 ? layer : peer, "c." + std::to_string(i), "m");
  CHECK_THROWS(SendText(layer, "c.one-too-many", "m"), ErrorCode::kTableFull);
  for (int i = 0; i < 20; ++i) layer.GroupAdd("g", "c." + std::to_string(i));
  CHECK_CLEAN(layer);
  CHECK_CLEAN(peer);
  CHECK_EQ(peer.Stats().channels, 3000u);
  for (int i = 0; i < 3000; ++i)
    CHECK_EQ(ReceiveText(peer, "c." + std::to_string(i), 2).size(), 1u);
  CHECK_CLEAN(layer);
}

// releaseChannel walks the channel's inbox freeing its nodes and blocks: an owner killed halfway
// leaves a queue cut short and unreferenced nodes and blocks, which recovery gives back.
TEST(recovery_owner_dies_releasing_a_channel) {
  TempName name;
  Layer layer(Options(name));
  layer.GroupAdd("room", "plain");
  std::string how = RunChildThatDies([&] {
    LayerOptions options = Options(name);
    options.client_id = "dying1";
    Layer child(options);
    child.GroupAdd("room", "inbox.dying1!x");
    for (int i = 0; i < 5; ++i) SendText(child, "inbox.dying1!x", "m" + std::to_string(i));
    shmch::g_fault_point = 27;
    child.ReleaseChannel("inbox.dying1!x");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  CHECK(layer.Maintain());  // reclaims the dead owner's slot and what is left of its channel
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.channels, 1u);  // "plain"
  CHECK_EQ(s.members, 1u);
  CHECK_EQ(s.queued, 0u);
  CHECK_EQ(s.arena_used_bytes, 0u);
  CHECK_EQ(GroupSendText(layer, "room", "after"), 1u);
  CHECK_EQ(ReceiveText(layer, "plain", 5), std::vector<std::string>{"after"});
  CHECK_CLEAN(layer);
}

TEST(recovery_holder_dies_between_reserving_and_publishing_a_table_step) {
  TempName name;
  Layer layer(RoomyOptions(name));
  std::string how = DieAtFaultPoint(RoomyOptions(name), 11,
                                    [&](Layer& child) { SendText(child, "first", "lost"); });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  SendText(layer, "first", "after");
  CHECK_EQ(ReceiveText(layer, "first", 5), std::vector<std::string>{"after"});
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  CHECK_CLEAN(layer);
}

TEST(recovery_holder_dies_between_reserving_and_marking_arena_chunks) {
  TempName name;
  Layer layer(RoomyOptions(name));
  SendText(layer, "small", "kept");
  uint64_t before = ShmBytesOf(name);
  const uint32_t size = 3u << 20;
  std::string how = DieAtFaultPoint(RoomyOptions(name), 12, [&](Layer& child) {
    auto p = Payload(3, size);
    child.Send("big", p.data(), size);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK(ShmBytesOf(name) >= before + size);  // the dead holder's reservation
  CHECK_CLEAN(layer);                        // recovery punches reservations no chunk is marked for
  CHECK(ShmBytesOf(name) <= before);
  CHECK_EQ(ReceiveText(layer, "small", 5), std::vector<std::string>{"kept"});
  auto p = Payload(4, size);
  layer.Send("big", p.data(), size);
  CHECK_EQ(ReceiveText(layer, "big", 5).size(), 1u);
  CHECK_CLEAN(layer);
}

TEST(recovery_holder_dies_between_unmarking_and_punching_a_chunk) {
  TempName name;
  Layer layer(RoomyOptions(name));
  SendText(layer, "small", "kept");
  uint64_t base = ShmBytesOf(name);
  const uint32_t size = 1u << 20;
  for (uint32_t i = 0; i < 12; ++i) {
    auto p = Payload(i, size);
    layer.Send("big", p.data(), size);
  }
  std::string how = RunChildThatDies([&] {
    Layer child(RoomyOptions(name));
    ReceiveText(child, "big", 6);
    // Freed chunks stay in the warm reserve until the layer is idle: the second housekeeping
    // round without a send gives them back, and dies there.
    shmch::g_fault_point = 13;
    child.Maintain();
    child.Maintain();
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  // What it received is gone with it, the rest is intact.
  CHECK_EQ(ReceiveText(layer, "big", 100).size(), 6u);
  CHECK_EQ(ReceiveText(layer, "small", 5), std::vector<std::string>{"kept"});
  layer.Maintain();
  layer.Maintain();
  CHECK(ShmBytesOf(name) <= base + (1u << 20));
  CHECK_CLEAN(layer);
}
