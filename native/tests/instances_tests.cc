// Tables and instances: flush, full tables, closing and reclaiming instances, housekeeping.
#include "harness.h"

// ---------------------------------------------------------------------------------------------
// Flush.

TEST(flush_empties_everything) {
  TempName name;
  Layer layer(Options(name));
  Layer other(Options(name));
  for (int i = 0; i < 20; ++i)
    SendText(layer, "f" + std::to_string(i % 4), std::string(100 * i, 'f'));
  layer.GroupAdd("g1", "f0");
  layer.GroupAdd("g1", "f1");
  layer.GroupAdd("g2", "f1");
  CHECK_EQ(GroupSendText(layer, "g1", "fan"), 2u);
  CHECK(ReceiveText(other, "waiting", 1).empty());  // a waiter registration
  CHECK_CLEAN(layer);
  layer.Flush();
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.channels, 0u);
  CHECK_EQ(s.groups, 0u);
  CHECK_EQ(s.members, 0u);
  CHECK_EQ(s.queued, 0u);
  CHECK_EQ(s.arena_used_bytes, 0u);
  CHECK_EQ(s.nodes_free, 2048u);
  CHECK(layer.ListChannels(100).empty());
  CHECK(layer.ListGroups(100).empty());
  CHECK_CLEAN(layer);
  CHECK_CLEAN(other);
  // Still fully usable afterwards, from both instances.
  SendText(other, "after", "flush");
  layer.GroupAdd("g1", "after");
  CHECK_EQ(GroupSendText(other, "g1", "again"), 1u);
  CHECK_EQ(ReceiveText(layer, "after", 5), (std::vector<std::string>{"flush", "again"}));
  CHECK_CLEAN(layer);
}
// ---------------------------------------------------------------------------------------------
// Tables and instances.

TEST(channel_table_full) {
  TempName name;
  Layer layer(Options(name));
  for (int c = 0; c < 128; ++c) SendText(layer, "ch" + std::to_string(c), "x");
  CHECK_THROWS(SendText(layer, "ch-one-too-many", "x"), ErrorCode::kTableFull);
  // A group whose first member cannot get a channel record is not left behind, empty.
  CHECK_THROWS(layer.GroupAdd("newgroup", "ch-one-too-many"), ErrorCode::kTableFull);
  CHECK(layer.ListGroups(100).empty());
  // An existing channel can still join.
  layer.GroupAdd("newgroup", "ch0");
  CHECK_EQ(layer.Stats().channels, 128u);
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveText(layer, "ch5", 1), std::vector<std::string>{"x"});  // releases the record
  SendText(layer, "ch-one-too-many", "now there is room");
  CHECK_CLEAN(layer);
}

TEST(member_table_full) {
  TempName name;
  Layer layer(Options(name));  // 256 memberships
  for (int m = 0; m < 256; ++m)
    layer.GroupAdd("g" + std::to_string(m / 16), "c" + std::to_string(m % 16));
  CHECK_EQ(layer.Stats().members, 256u);
  CHECK_THROWS(layer.GroupAdd("g-new", "c-new"), ErrorCode::kTableFull);
  CHECK_EQ(layer.Stats().groups, 16u);  // the would-be group was removed again
  CHECK(!HasChannel(layer, "c-new"));   // and so was the would-be channel
  layer.GroupAdd("g0", "c0");           // renewing an existing membership needs no record
  CHECK_CLEAN(layer);
  layer.GroupDiscard("g0", "c0");
  layer.GroupAdd("g-new", "c-new");
  CHECK_EQ(GroupSendText(layer, "g-new", "hi"), 1u);
  CHECK_CLEAN(layer);
}

// Finding 8: Receive created records from names it never validated: a 600-byte name was copied
// into the 200-byte name field, over the next record and the bucket table.
TEST(receive_and_unwait_refuse_bad_names_without_damage) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "ok", "kept");
  shmch::ReceivedBatch batch;
  CHECK_THROWS(layer.Receive({{std::string(600, 'z'), 1}}, batch), ErrorCode::kInvalidArgument);
  CHECK_THROWS(layer.Receive({{"ok", 1}, {std::string(201, 'z'), 1}}, batch),
               ErrorCode::kInvalidArgument);
  CHECK_THROWS(layer.Receive({{"bad name", 1}}, batch), ErrorCode::kInvalidArgument);
  CHECK_THROWS(layer.Receive({{"", 1}}, batch), ErrorCode::kInvalidArgument);
  CHECK_THROWS(layer.Unwait({std::string(600, 'z')}), ErrorCode::kInvalidArgument);
  CHECK(batch.request_of.empty());
  CHECK_EQ(layer.Stats().channels, 1u);
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveText(layer, "ok", 5), std::vector<std::string>{"kept"});
}

TEST(receive_batch_naming_a_channel_twice_is_refused_without_damage) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "dup", "one");
  SendText(layer, "dup", "two");
  shmch::ReceivedBatch batch;
  CHECK_THROWS(layer.Receive({{"dup", 1}, {"dup", 1}}, batch), ErrorCode::kInvalidArgument);
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveText(layer, "dup", 5), (std::vector<std::string>{"one", "two"}));
  CHECK_CLEAN(layer);
}

TEST(receive_skips_expired_messages_inside_a_queue) {
  TempName name;
  LayerOptions fast = Options(name);
  fast.expiry_ms = 1;
  Layer a(Options(name));
  Layer b(fast);
  SendText(a, "mix", "a1");
  SendText(b, "mix", "b-expires");
  SendText(a, "mix", "a2");
  SendText(b, "mix", "b-expires-too");
  SendText(a, "mix", "a3");
  usleep(20'000);
  CHECK_EQ(ReceiveText(a, "mix", 2), (std::vector<std::string>{"a1", "a2"}));
  CHECK_CLEAN(a);
  CHECK_EQ(ReceiveText(a, "mix", 2), (std::vector<std::string>{"a3"}));
  shmch::LayerStats s = a.Stats();
  CHECK_EQ(s.messages_expired, 2u);
  CHECK_EQ(s.messages_received, 3u);
  CHECK_EQ(s.queued, 0u);
  CHECK_CLEAN(a);
}

TEST(closing_an_instance_withdraws_its_waits) {
  TempName name;
  Layer keeper(Options(name));
  {
    Layer waiter(Options(name));
    CHECK(ReceiveText(waiter, "awaited", 1).empty());
    CHECK(HasChannel(keeper, "awaited"));
  }
  CHECK(!HasChannel(keeper, "awaited"));
  CHECK_EQ(keeper.Stats().slots_attached, 1u);
  CHECK_CLEAN(keeper);
}

TEST(flush_rings_instances_waiting_elsewhere) {
  TempName name;
  Layer waiter(Options(name));
  Layer flusher(Options(name));
  CHECK(ReceiveText(waiter, "w", 1).empty());
  flusher.Flush();
  CHECK(waiter.TakeBell());
  CHECK_CLEAN(flusher);
}

TEST(all_slots_taken_gives_table_full) {
  TempName name;
  std::vector<std::unique_ptr<Layer>> layers;
  for (uint32_t i = 0; i < shmch::kMaxSlots; ++i)
    layers.push_back(std::make_unique<Layer>(Options(name)));
  CHECK_EQ(layers.back()->Stats().slots_attached, shmch::kMaxSlots);
  CHECK_THROWS(Layer one_more(Options(name)), ErrorCode::kTableFull);
  layers[17].reset();  // a slot frees up: the next instance gets it
  Layer again(Options(name));
  CHECK_EQ(again.slot_index(), 17u);
  SendText(*layers[0], "x", "y");
  CHECK_EQ(ReceiveText(again, "x", 1), std::vector<std::string>{"y"});
  CHECK_CLEAN(again);
}

// Finding 11: reclaiming a dead instance scanned the whole member table once per '!' channel it
// had in a group (16k inboxes: 0.4-1.6 s under the lock). Now one pass removes them all; what
// stays must be exactly what belonged to others.
TEST(reclaiming_a_dead_instance_drops_all_its_inboxes_and_memberships_at_once) {
  TempName name;
  LayerOptions options = Options(name);
  options.segment.max_channels = 512;
  options.segment.max_members = 1024;
  options.segment.max_nodes = 4096;
  options.segment.size = 8u << 20;
  options.capacity = 1000;  // the 300 '!' channels' messages all wait in one inbox
  Layer survivor(options);
  survivor.GroupAdd("room", "survivor.kept");
  SendText(survivor, "survivor.kept", "mine");
  std::string how = RunChild([&] {
    LayerOptions mine = options;
    mine.client_id = "dying1";
    Layer child(mine);
    for (int i = 0; i < 300; ++i) {
      std::string inbox = "conn.dying1!" + std::to_string(i);
      child.GroupAdd("room", inbox);
      child.GroupAdd("g" + std::to_string(i % 7), inbox);
      SendText(child, inbox, "queued");
    }
    kill(getpid(), SIGKILL);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  shmch::LayerStats before = survivor.Stats();
  CHECK_EQ(before.members, 601u);
  CHECK(survivor.Maintain(nullptr));
  shmch::LayerStats after = survivor.Stats();
  CHECK_EQ(after.members, 1u);
  CHECK_EQ(after.groups, 1u);
  CHECK_EQ(after.channels, 1u);
  CHECK_EQ(after.queued, 1u);
  CHECK_EQ(after.messages_orphaned - before.messages_orphaned, 300u);
  CHECK_EQ(GroupSendText(survivor, "room", "hello"), 1u);
  CHECK_EQ(ReceiveText(survivor, "survivor.kept", 5), (std::vector<std::string>{"mine", "hello"}));
  CHECK_CLEAN(survivor);
}

// Finding 13: groupSend matched every member's name against the channelCapacity globs under the
// lock. The capacity is now cached in the channel record with a tag of the options it came from:
// a process with other options still gets its own capacity.
TEST(channel_capacity_is_cached_per_record_but_each_options_get_their_own) {
  TempName name;
  LayerOptions tight = Options(name);
  tight.channel_capacity = {{"limited.*", 2}};
  LayerOptions loose = Options(name);
  loose.channel_capacity = {{"limited.*", 4}};
  Layer a(tight);
  Layer b(loose);
  a.GroupAdd("g", "limited.x");
  a.GroupAdd("g", "other");
  for (int i = 0; i < 6; ++i) GroupSendText(a, "g", "m");
  CHECK_EQ(ReceiveText(a, "limited.x", 10).size(), 2u);  // the creator's (and a's) capacity
  CHECK_EQ(ReceiveText(a, "other", 10).size(), 6u);      // the default, 100
  for (int i = 0; i < 6; ++i) GroupSendText(b, "g", "m");
  CHECK_EQ(ReceiveText(b, "limited.x", 10).size(), 4u);  // b's options, not the record's
  SendText(a, "limited.x", "1");
  SendText(a, "limited.x", "2");
  CHECK_THROWS(SendText(a, "limited.x", "3"), ErrorCode::kChannelFull);
  SendText(b, "limited.x", "3");
  SendText(b, "limited.x", "4");
  CHECK_THROWS(SendText(b, "limited.x", "5"), ErrorCode::kChannelFull);
  CHECK_CLEAN(a);
}

// Finding 13: every process swept every table for expired entries under the lock every 2 s. Now
// one sweep per second serves the whole segment, done by whichever process comes first.
TEST(expiry_sweep_runs_once_per_interval_for_all_processes) {
  TempName name;
  LayerOptions options = Options(name);
  options.expiry_ms = 30;
  Layer a(options);
  Layer b(options);
  CHECK(a.Maintain());  // a swept: the next second is covered
  SendText(a, "q", "expires");
  usleep(60'000);
  CHECK(b.Maintain());  // not b's turn: the expired message is still there
  CHECK_EQ(b.Stats().queued, 1u);
  CHECK_EQ(b.Stats().messages_expired, 0u);
  usleep(1'000'000);
  CHECK(b.Maintain());  // b's turn now
  CHECK_EQ(b.Stats().queued, 0u);
  CHECK_EQ(b.Stats().messages_expired, 1u);
  CHECK_CLEAN(a);
}

// The reclaimer dies between taking the dead instance's inboxes out of their groups and dropping
// them (fault point 17): the next holder recovers, the next reclaim finishes the job.
TEST(reclaimer_killed_between_memberships_and_channels_leaves_nothing) {
  TempName name;
  LayerOptions options = Options(name);
  Layer survivor(options);
  survivor.GroupAdd("room", "survivor.kept");
  CHECK_EQ(RunChild([&] {
             LayerOptions mine = options;
             mine.client_id = "dying2";
             Layer child(mine);
             for (int i = 0; i < 20; ++i) {
               child.GroupAdd("room", "conn.dying2!" + std::to_string(i));
               SendText(child, "conn.dying2!" + std::to_string(i), "queued");
             }
             kill(getpid(), SIGKILL);
           }),
           std::string("SIGKILL"));
  CHECK_EQ(RunChildThatDies([&] {
             shmch::g_fault_point = 17;
             Layer reclaimer(options);  // reclaims the dead slot as it attaches
           }),
           std::string("SIGKILL"));
  CHECK(survivor.Maintain());
  CHECK_CLEAN(survivor);
  shmch::LayerStats s = survivor.Stats();
  CHECK_EQ(s.channels, 1u);
  CHECK_EQ(s.members, 1u);
  CHECK_EQ(s.queued, 0u);
  CHECK_EQ(GroupSendText(survivor, "room", "hi"), 1u);
  CHECK_CLEAN(survivor);
}

TEST(maintain_drops_expired_messages_and_memberships) {
  TempName name;
  LayerOptions o = Options(name);
  o.expiry_ms = 1;
  o.group_expiry_ms = 1;
  Layer layer(o);
  SendText(layer, "stale", "x");
  layer.GroupAdd("g", "member");
  usleep(20'000);
  layer.Maintain();
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.queued, 0u);
  CHECK_EQ(s.members, 0u);
  CHECK_EQ(s.groups, 0u);
  CHECK_EQ(s.channels, 0u);
  CHECK_EQ(s.messages_expired, 1u);
  CHECK_CLEAN(layer);
}
