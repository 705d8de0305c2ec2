// Groups: add, send, discard, expiry, members, full tables.
#include "harness.h"

// ---------------------------------------------------------------------------------------------
// Groups.

TEST(groups_add_send_discard) {
  TempName name;
  Layer layer(Options(name));
  layer.GroupAdd("room", "c1");
  layer.GroupAdd("room", "c2");
  layer.GroupAdd("room", "c3");
  layer.GroupAdd("room", "c1");  // idempotent
  CHECK_CLEAN(layer);
  auto groups = layer.ListGroups(100);
  CHECK_EQ(groups.size(), 1u);
  CHECK_EQ(groups[0].name, std::string("room"));
  CHECK_EQ(groups[0].members, 3u);
  CHECK_EQ(layer.Stats().members, 3u);

  const std::string text(1000, 'g');
  CHECK_EQ(GroupSendText(layer, "room", text), 3u);
  // One stored copy, three queued references.
  CHECK_EQ(layer.Stats().arena_used_bytes,
           uint64_t{shmch::Arena::PagesFor(1000)} * shmch::kPageSize);
  CHECK_EQ(layer.Stats().queued, 3u);
  CHECK_CLEAN(layer);
  for (const char* c : {"c1", "c2", "c3"})
    CHECK_EQ(ReceiveText(layer, c, 5), std::vector<std::string>{text});
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);

  layer.GroupDiscard("room", "c2");
  layer.GroupDiscard("room", "c2");     // discarding again is harmless
  layer.GroupDiscard("room", "nope");   // so is discarding a stranger
  layer.GroupDiscard("nogroup", "c1");  // or from a group that does not exist
  CHECK_CLEAN(layer);
  CHECK_EQ(GroupSendText(layer, "room", "second"), 2u);
  CHECK(ReceiveText(layer, "c2", 5).empty());
  CHECK_EQ(ReceiveText(layer, "c1", 5), std::vector<std::string>{"second"});
  CHECK_EQ(ReceiveText(layer, "c3", 5), std::vector<std::string>{"second"});

  layer.GroupDiscard("room", "c1");
  layer.GroupDiscard("room", "c3");
  CHECK(layer.ListGroups(100).empty());
  CHECK_EQ(layer.Stats().groups, 0u);
  CHECK_EQ(layer.Stats().members, 0u);
  CHECK_EQ(GroupSendText(layer, "room", "nobody"), 0u);
  CHECK_EQ(GroupSendText(layer, "never-existed", "nobody"), 0u);
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(groups_one_channel_in_many_groups) {
  TempName name;
  Layer layer(Options(name));
  for (int g = 0; g < 10; ++g) layer.GroupAdd("g" + std::to_string(g), "shared");
  layer.GroupAdd("g0", "other");
  auto channels = layer.ListChannels(100);
  CHECK_EQ(channels.size(), 2u);
  for (const auto& c : channels) CHECK_EQ(c.memberships, c.name == "shared" ? 10u : 1u);
  for (int g = 0; g < 10; ++g)
    CHECK_EQ(GroupSendText(layer, "g" + std::to_string(g), "to g" + std::to_string(g)),
             1u + (g == 0));
  CHECK_EQ(ReceiveText(layer, "shared", 100), Texts("to g", 0, 10));
  CHECK_CLEAN(layer);
  for (int g = 0; g < 10; ++g) layer.GroupDiscard("g" + std::to_string(g), "shared");
  CHECK_EQ(layer.ListGroups(100).size(), 1u);
  CHECK_CLEAN(layer);
}

TEST(groups_send_skips_full_members) {
  TempName name;
  LayerOptions o = Options(name);
  o.channel_capacity = {{"tiny.*", 1}};
  Layer layer(o);
  layer.GroupAdd("g", "tiny.a");
  layer.GroupAdd("g", "roomy");
  SendText(layer, "tiny.a", "already full");
  CHECK_EQ(GroupSendText(layer, "g", "fan"), 1u);
  CHECK_EQ(ReceiveText(layer, "tiny.a", 5), std::vector<std::string>{"already full"});
  CHECK_EQ(ReceiveText(layer, "roomy", 5), std::vector<std::string>{"fan"});
  CHECK_CLEAN(layer);
  // With every member full, nothing is stored.
  SendText(layer, "tiny.a", "full again");
  layer.GroupDiscard("g", "roomy");
  CHECK_EQ(GroupSendText(layer, "g", "lost"), 0u);
  CHECK_EQ(layer.Stats().queued, 1u);
  CHECK_CLEAN(layer);
}

TEST(groups_memberships_expire) {
  TempName name;
  LayerOptions o = Options(name);
  o.group_expiry_ms = 1;
  Layer layer(o);
  layer.GroupAdd("brief", "member");
  usleep(20'000);
  CHECK_EQ(GroupSendText(layer, "brief", "too late"), 0u);
  CHECK(layer.ListGroups(100).empty());
  CHECK_EQ(layer.Stats().members, 0u);
  CHECK(ReceiveText(layer, "member", 1).empty());
  CHECK_CLEAN(layer);
}

TEST(groups_members_lists_live_memberships) {
  TempName name;
  Layer layer(Options(name));
  Layer other(Options(name));
  CHECK(layer.GroupMembers("nobody").empty());
  layer.GroupAdd("room", "c1");
  other.GroupAdd("room", "c2");
  layer.GroupAdd("room", "c1");
  layer.GroupAdd("elsewhere", "c3");
  auto members = other.GroupMembers("room");
  std::sort(members.begin(), members.end());
  CHECK_EQ(members, (std::vector<std::string>{"c1", "c2"}));
  CHECK_EQ(layer.GroupMembers("elsewhere"), std::vector<std::string>{"c3"});
  CHECK_THROWS(layer.GroupMembers("bad name"), ErrorCode::kInvalidArgument);
  CHECK_THROWS(layer.GroupMembers(""), ErrorCode::kInvalidArgument);
  // A membership renewed by an instance with a 1 ms group expiry is expired at once: not listed,
  // and listing leaves the tables as they were.
  LayerOptions brief = Options(name);
  brief.group_expiry_ms = 1;
  Layer hasty(brief);
  hasty.GroupAdd("room", "c1");
  usleep(20'000);
  CHECK_EQ(layer.GroupMembers("room"), std::vector<std::string>{"c2"});
  CHECK_EQ(layer.Stats().members, 3u);
  CHECK_CLEAN(layer);
  layer.GroupDiscard("room", "c2");
  CHECK(other.GroupMembers("room").empty());
  CHECK_CLEAN(layer);
}

TEST(groups_table_full) {
  TempName name;
  Layer layer(Options(name));
  for (uint32_t g = 0; g < 32; ++g) layer.GroupAdd("g" + std::to_string(g), "c");
  CHECK_THROWS(layer.GroupAdd("one-too-many", "c"), ErrorCode::kTableFull);
  CHECK_EQ(layer.Stats().groups, 32u);
  CHECK_CLEAN(layer);
}

// One groupSend to a group of many members, some expired and some full: one walk handles each
// member once, removing the expired memberships and skipping (and counting) the full channels.
TEST(groups_large_group_send_handles_every_member_once) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 4;
  o.channel_capacity = {{"full.*", 1}};
  LayerOptions brief_options = o;
  brief_options.group_expiry_ms = 1;
  Layer layer(o);
  Layer brief(brief_options);
  constexpr int kMembers = 120;  // of the 256 member records; channels: of 128
  auto channel_of = [](int i) { return std::string(i % 5 == 0 ? "full." : "live.") + std::to_string(i); };
  uint32_t reached = 0, kept = 0;
  for (int i = 0; i < kMembers; ++i) {
    // Every third membership expires at once; every fifth channel is full already.
    (i % 3 == 0 ? brief : layer).GroupAdd("big", channel_of(i));
    if (i % 5 == 0) SendText(layer, channel_of(i), "fill");
    if (i % 3 != 0) ++kept;
    if (i % 3 != 0 && i % 5 != 0) ++reached;
  }
  usleep(20'000);
  const uint64_t skipped_before = layer.Stats().deliveries_skipped_full;
  CHECK_EQ(GroupSendText(layer, "big", "fan"), reached);
  CHECK_EQ(layer.Stats().members, kept);
  CHECK_EQ(layer.Stats().deliveries_skipped_full - skipped_before, uint64_t{kept - reached});
  for (int i = 0; i < kMembers; ++i) {
    std::vector<std::string> got = ReceiveText(layer, channel_of(i), 4);
    if (i % 5 == 0) {
      CHECK(got == std::vector<std::string>{"fill"});
    } else if (i % 3 != 0) {
      CHECK(got == std::vector<std::string>{"fan"});
    } else {
      CHECK(got.empty());
    }
  }
  CHECK_CLEAN(layer);
}
