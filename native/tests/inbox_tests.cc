// Inboxes: a process's '!' channels are served through one queue per prefix, '<prefix>.<client>!'
// (native/core/inbox.cc): direct sends and group deliveries alike, one node per process for a
// group send, its targets resolved by the owner's receive.
#include <sys/mman.h>

#include "harness.h"

namespace {

// One message taken from an inbox: its text and the channels it is for.
struct InboxMessage {
  std::string text;
  std::vector<std::string> targets;
  bool operator==(const InboxMessage& o) const { return text == o.text && targets == o.targets; }
};

std::string ShowMessages(const std::vector<InboxMessage>& messages) {
  std::string out = "[";
  for (const InboxMessage& m : messages) {
    out += "{" + m.text + " ->";
    for (const std::string& t : m.targets) out += " " + t;
    out += "} ";
  }
  return out + "]";
}

// Reads the batch as the binding hands it over: the targets of each message through the
// batch's name table.
std::vector<InboxMessage> ReceiveInbox(Layer& layer, const std::string& inbox, uint32_t wanted) {
  shmch::ReceivedBatch batch;
  layer.Receive({{inbox, wanted}}, batch);
  std::vector<std::string> names;
  for (size_t at = 0; at < batch.target_names.size();) {
    uint32_t length;
    std::memcpy(&length, batch.target_names.data() + at, 4);
    names.emplace_back(reinterpret_cast<const char*>(batch.target_names.data()) + at + 4, length);
    at += 4 + ((length + 3) & ~3u);
  }
  CHECK_EQ(names.size(), size_t{batch.target_name_count});
  std::vector<InboxMessage> out;
  size_t offset = 0, target = 0;
  for (size_t i = 0; i < batch.length_of.size(); ++i) {
    InboxMessage m;
    m.text.assign(reinterpret_cast<const char*>(batch.bytes.data()) + offset, batch.length_of[i]);
    offset += batch.length_of[i];
    for (uint32_t k = 0; k < batch.target_count_of[i]; ++k) {
      m.targets.push_back(names.at(batch.targets.at(target++)));
    }
    out.push_back(std::move(m));
  }
  CHECK_EQ(target, batch.targets.size());
  return out;
}

std::vector<std::string> Names(const std::string& prefix, int count) {
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

LayerOptions Client(const TempName& name, const std::string& client) {
  LayerOptions options = Options(name);
  options.client_id = client;
  return options;
}

}  // namespace

#define CHECK_MESSAGES(actual, ...)                                                    \
  do {                                                                                 \
    std::vector<InboxMessage> got_ = (actual);                                         \
    std::vector<InboxMessage> want_ = __VA_ARGS__;                                     \
    if (!(got_ == want_)) {                                                            \
      Fail(__FILE__, __LINE__, ShowMessages(got_) + " != " + ShowMessages(want_));     \
    }                                                                                  \
  } while (0)

TEST(inbox_direct_sends_to_a_process_local_channels_share_one_queue_in_send_order) {
  TempName name;
  Layer owner(Client(name, "me1"));
  Layer sender(Options(name));
  SendText(sender, "in.me1!a", "1");
  SendText(sender, "in.me1!b", "2");
  SendText(owner, "in.me1!a", "3");
  CHECK_EQ(owner.Stats().queued, 3u);
  // The channels hold nothing of their own: every message waits in the inbox.
  CHECK(ReceiveText(owner, "in.me1!a", 5).empty());
  CHECK_MESSAGES(ReceiveInbox(owner, "in.me1!", 10),
                 {{"1", {"in.me1!a"}}, {"2", {"in.me1!b"}}, {"3", {"in.me1!a"}}});
  CHECK_EQ(owner.Stats().messages_received, 3u);
  // A process with two prefixes has two inboxes.
  SendText(sender, "other.me1!c", "4");
  CHECK(ReceiveInbox(owner, "in.me1!", 10).empty());
  CHECK_MESSAGES(ReceiveInbox(owner, "other.me1!", 10), {{"4", {"other.me1!c"}}});
  CHECK_CLEAN(owner);
  // Only the records waited on are left: the '!' records went with their last message.
  owner.Unwait({"in.me1!a", "in.me1!", "other.me1!"});
  CHECK_EQ(owner.Stats().channels, 0u);
}

TEST(inbox_capacity_counts_a_process_local_channels_together) {
  TempName name;
  LayerOptions options = Client(name, "me1");
  options.capacity = 2;
  options.channel_capacity = {{"wide.*", 3}};
  Layer owner(options);
  SendText(owner, "in.me1!a", "1");
  SendText(owner, "in.me1!b", "2");
  // The instance's inbox holds the capacity: a send to any of its '!' channels is refused.
  CHECK_THROWS(SendText(owner, "in.me1!c", "3"), ErrorCode::kChannelFull);
  CHECK_THROWS(SendText(owner, "in.me1!a", "3"), ErrorCode::kChannelFull);
  CHECK_EQ(owner.Stats().sends_refused_full, 2u);
  CHECK_EQ(ReceiveInbox(owner, "in.me1!", 1).size(), 1u);
  SendText(owner, "in.me1!c", "3");
  // The capacity number is the full name's (channels_redis get_capacity(channel)).
  SendText(owner, "wide.me1!a", "1");
  SendText(owner, "wide.me1!b", "2");
  SendText(owner, "wide.me1!c", "3");
  CHECK_THROWS(SendText(owner, "wide.me1!d", "4"), ErrorCode::kChannelFull);
  CHECK_CLEAN(owner);
}

TEST(inbox_group_send_makes_one_node_per_process_resolved_to_its_members) {
  TempName name;
  Layer a(Client(name, "aa1"));
  Layer b(Client(name, "bb2"));
  for (const std::string& c : Names("in.aa1!", 25)) a.GroupAdd("room", c);
  for (const std::string& c : Names("in.bb2!", 3)) b.GroupAdd("room", c);
  a.GroupAdd("room", "plain");
  CHECK_EQ(a.Stats().members, 29u);
  const std::vector<shmch::GroupInfo> groups = a.ListGroups(10);
  CHECK_EQ(groups.at(0).members, 29u);
  CHECK_EQ(a.GroupMembers("room").size(), 29u);
  CHECK_CLEAN(a);
  CHECK_EQ(GroupSendText(a, "room", "hello"), 29u);
  // One node per inbox, one for the ordinary member; one stored payload.
  CHECK_EQ(a.Stats().queued, 3u);
  CHECK_EQ(a.Stats().messages_sent, 29u);
  std::vector<InboxMessage> got = ReceiveInbox(a, "in.aa1!", 10);
  CHECK_EQ(got.size(), 1u);
  CHECK_EQ(got.at(0).text, std::string("hello"));
  std::vector<std::string> targets = got.at(0).targets;
  std::sort(targets.begin(), targets.end());
  std::vector<std::string> members = Names("in.aa1!", 25);
  std::sort(members.begin(), members.end());
  CHECK_EQ(targets, members);
  CHECK_EQ(ReceiveInbox(b, "in.bb2!", 10).at(0).targets.size(), 3u);
  CHECK_EQ(ReceiveText(a, "plain", 5), std::vector<std::string>{"hello"});
  CHECK_EQ(a.Stats().messages_received, 29u);
  CHECK_EQ(a.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(a);
}

TEST(inbox_keeps_order_across_direct_and_group_sends_to_one_channel) {
  TempName name;
  Layer owner(Client(name, "me1"));
  owner.GroupAdd("room", "in.me1!a");
  SendText(owner, "in.me1!a", "d1");
  CHECK_EQ(GroupSendText(owner, "room", "g1"), 1u);
  SendText(owner, "in.me1!b", "d2");
  SendText(owner, "in.me1!a", "d3");
  CHECK_MESSAGES(ReceiveInbox(owner, "in.me1!", 10), {{"d1", {"in.me1!a"}},
                                                     {"g1", {"in.me1!a"}},
                                                     {"d2", {"in.me1!b"}},
                                                     {"d3", {"in.me1!a"}}});
  CHECK_CLEAN(owner);
}

// What a groupDiscard racing a groupSend gives: the discard wins if it comes before the owner
// takes the message from shared memory; a member added after the send does not get it.
TEST(inbox_group_delivery_reaches_members_at_receive_that_joined_before_the_send) {
  TempName name;
  Layer owner(Client(name, "me1"));
  owner.GroupAdd("room", "in.me1!a");
  owner.GroupAdd("room", "in.me1!b");
  CHECK_EQ(GroupSendText(owner, "room", "first"), 2u);
  owner.GroupDiscard("room", "in.me1!b");
  owner.GroupAdd("room", "in.me1!c");
  CHECK_MESSAGES(ReceiveInbox(owner, "in.me1!", 10), {{"first", {"in.me1!a"}}});
  // The delivery to b is counted orphaned, not received.
  CHECK_EQ(owner.Stats().messages_sent, 2u);
  CHECK_EQ(owner.Stats().messages_received, 1u);
  CHECK_EQ(owner.Stats().messages_orphaned, 1u);
  CHECK_EQ(GroupSendText(owner, "room", "second"), 2u);
  std::vector<InboxMessage> got = ReceiveInbox(owner, "in.me1!", 10);
  CHECK_EQ(got.size(), 1u);
  CHECK_EQ(got.at(0).targets.size(), 2u);
  // Every member gone before the receive: the message is taken and counted, not handed out.
  CHECK_EQ(GroupSendText(owner, "room", "third"), 2u);
  owner.GroupDiscard("room", "in.me1!a");
  owner.GroupDiscard("room", "in.me1!c");
  CHECK(ReceiveInbox(owner, "in.me1!", 10).empty());
  CHECK_EQ(owner.Stats().queued, 0u);
  CHECK_EQ(owner.Stats().messages_orphaned, 3u);
  // A group record reused after the group emptied does not hand its old deliveries to new
  // members.
  owner.GroupAdd("room", "in.me1!a");
  CHECK_EQ(GroupSendText(owner, "room", "fourth"), 1u);
  owner.GroupDiscard("room", "in.me1!a");
  owner.GroupAdd("hall", "in.me1!a");
  CHECK(ReceiveInbox(owner, "in.me1!", 10).empty());
  CHECK_CLEAN(owner);
}

TEST(inbox_release_channel_drops_its_messages_and_leaves_the_others) {
  TempName name;
  Layer owner(Client(name, "me1"));
  owner.GroupAdd("room", "in.me1!a");
  owner.GroupAdd("room", "in.me1!b");
  owner.GroupAdd("solo", "in.me1!a");
  SendText(owner, "in.me1!b", "b1");
  SendText(owner, "in.me1!a", "a1");
  CHECK_EQ(GroupSendText(owner, "room", "both"), 2u);
  CHECK_EQ(GroupSendText(owner, "solo", "a-only"), 1u);
  SendText(owner, "in.me1!b", "b2");
  // a1, and the group delivery that was for a alone; "both" still goes to b.
  CHECK_EQ(owner.ReleaseChannel("in.me1!a"), 2u);
  CHECK_EQ(owner.Stats().queued, 3u);
  CHECK_MESSAGES(ReceiveInbox(owner, "in.me1!", 10),
                 {{"b1", {"in.me1!b"}}, {"both", {"in.me1!b"}}, {"b2", {"in.me1!b"}}});
  CHECK_EQ(owner.Stats().messages_orphaned, 3u);  // a1, a-only, and "both" for a
  CHECK_EQ(owner.GroupMembers("room"), std::vector<std::string>{"in.me1!b"});
  CHECK_EQ(owner.ReleaseChannel("in.me1!a"), 0u);
  CHECK_CLEAN(owner);
}

TEST(inbox_of_a_dead_process_is_reclaimed_with_its_fans_and_later_sends_are_orphaned) {
  TempName name;
  Layer survivor(Client(name, "live1"));
  survivor.GroupAdd("room", "in.live1!x");
  std::string how = RunChild([&] {
    Layer child(Client(name, "dying1"));
    for (const std::string& c : Names("in.dying1!", 25)) child.GroupAdd("room", c);
    CHECK_EQ(GroupSendText(child, "room", "queued"), 26u);
    kill(getpid(), SIGKILL);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_EQ(survivor.Stats().members, 26u);
  CHECK(survivor.Maintain());
  shmch::LayerStats s = survivor.Stats();
  CHECK_EQ(s.members, 1u);
  CHECK_EQ(s.queued, 1u);  // the survivor's own delivery
  CHECK_EQ(s.messages_orphaned, 25u);
  CHECK_EQ(GroupSendText(survivor, "room", "after"), 1u);
  CHECK(!survivor.Send("in.dying1!3", reinterpret_cast<const uint8_t*>("x"), 1));
  CHECK_MESSAGES(ReceiveInbox(survivor, "in.live1!", 10),
                 {{"queued", {"in.live1!x"}}, {"after", {"in.live1!x"}}});
  // The survivor's '!' channel (kept by its group) and its inbox (its fan, our wait).
  CHECK_EQ(survivor.Stats().channels, 2u);
  CHECK_CLEAN(survivor);
}

TEST(inbox_group_send_to_10000_members_of_4_processes_is_4_nodes) {
  TempName name;
  LayerOptions base = Options(name);
  base.segment.size = 64u << 20;
  base.segment.max_channels = 16384;
  base.segment.max_members = 16384;
  std::vector<std::unique_ptr<Layer>> members;
  for (int p = 0; p < 4; ++p) {
    LayerOptions o = base;
    o.client_id = "p" + std::to_string(p);
    members.push_back(std::make_unique<Layer>(o));
    for (int i = 0; i < 2500; ++i) {
      members.back()->GroupAdd("big", "in.p" + std::to_string(p) + "!" + std::to_string(i));
    }
  }
  Layer& sender = *members[0];
  CHECK_EQ(GroupSendText(sender, "big", "m"), 10000u);
  CHECK_EQ(sender.Stats().queued, 4u);
  for (int p = 0; p < 4; ++p) {
    std::vector<InboxMessage> got = ReceiveInbox(*members[p], "in.p" + std::to_string(p) + "!", 5);
    CHECK_EQ(got.size(), 1u);
    CHECK_EQ(got.at(0).targets.size(), 2500u);
  }
  CHECK_CLEAN(sender);
}

TEST(inbox_expiry_and_flush_count_every_delivery) {
  TempName name;
  LayerOptions options = Client(name, "me1");
  options.expiry_ms = 30;
  Layer owner(options);
  for (const std::string& c : Names("in.me1!", 5)) owner.GroupAdd("room", c);
  CHECK_EQ(GroupSendText(owner, "room", "old"), 5u);
  SendText(owner, "in.me1!0", "old-direct");
  usleep(60'000);
  CHECK(ReceiveInbox(owner, "in.me1!", 10).empty());
  CHECK_EQ(owner.Stats().messages_expired, 6u);
  CHECK_EQ(GroupSendText(owner, "room", "flushed"), 5u);
  owner.Flush();
  CHECK_EQ(owner.Stats().members, 0u);
  CHECK_EQ(owner.Stats().queued, 0u);
  CHECK_EQ(GroupSendText(owner, "room", "nobody"), 0u);
  CHECK_CLEAN(owner);
}

// ---------------------------------------------------------------------------------------------
// Deaths in the new critical steps (fault points 27-29, and 1-2 on an inbox node).

TEST(recovery_owner_dies_releasing_a_channel_out_of_the_middle_of_its_inbox) {
  TempName name;
  Layer layer(Client(name, "keep1"));
  std::string how = RunChildThatDies([&] {
    Layer child(Client(name, "dying1"));
    SendText(child, "in.dying1!a", "a1");
    SendText(child, "in.dying1!b", "b1");
    SendText(child, "in.dying1!b", "b2");
    shmch::g_fault_point = 27;
    child.ReleaseChannel("in.dying1!b");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  CHECK(layer.Maintain());
  CHECK_EQ(layer.Stats().queued, 0u);
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_EQ(layer.Stats().channels, 0u);
  CHECK_CLEAN(layer);
}

TEST(recovery_releasing_holder_dies_with_the_inbox_kept_by_its_live_owner) {
  // The owner lives on: its inbox survives the release's death, minus the node unlinked.
  TempName name;
  Layer owner(Client(name, "me1"));
  SendText(owner, "in.me1!a", "a1");
  SendText(owner, "in.me1!b", "b1");
  SendText(owner, "in.me1!a", "a2");
  std::string how = DieAtFaultPoint(Options(name), 27, [&](Layer& child) {
    child.ReleaseChannel("in.me1!b");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(owner);
  CHECK_MESSAGES(ReceiveInbox(owner, "in.me1!", 10),
                 {{"a1", {"in.me1!a"}}, {"a2", {"in.me1!a"}}});
  CHECK_EQ(owner.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(owner);
}

TEST(recovery_holder_dies_with_a_fan_linked_and_its_member_not_published) {
  TempName name;
  Layer owner(Client(name, "me1"));
  owner.GroupAdd("room", "plain");
  std::string how = DieAtFaultPoint(Client(name, "me1"), 28, [&](Layer& child) {
    child.GroupAdd("room", "in.me1!a");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(owner);  // the fan is derived: rebuilt from the members, so it went
  CHECK_EQ(owner.Stats().members, 1u);
  CHECK_EQ(owner.GroupMembers("room"), std::vector<std::string>{"plain"});
  owner.GroupAdd("room", "in.me1!a");
  CHECK_EQ(GroupSendText(owner, "room", "m"), 2u);
  CHECK_MESSAGES(ReceiveInbox(owner, "in.me1!", 10), {{"m", {"in.me1!a"}}});
  CHECK_CLEAN(owner);
}

TEST(recovery_holder_dies_after_a_fans_last_member_went_and_before_the_fan) {
  TempName name;
  Layer owner(Client(name, "me1"));
  owner.GroupAdd("room", "in.me1!a");
  owner.GroupAdd("room", "plain");
  std::string how = DieAtFaultPoint(Client(name, "me1"), 29, [&](Layer& child) {
    child.GroupDiscard("room", "in.me1!a");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(owner);
  CHECK_EQ(owner.GroupMembers("room"), std::vector<std::string>{"plain"});
  CHECK_EQ(GroupSendText(owner, "room", "m"), 1u);
  CHECK(ReceiveInbox(owner, "in.me1!", 10).empty());
  CHECK_CLEAN(owner);
}

TEST(recovery_rebuilds_fans_and_inbox_references_after_a_sender_dies_enqueueing) {
  for (int point : {1, 2}) {
    TempName name;
    Layer owner(Client(name, "me1"));
    for (const std::string& c : Names("in.me1!", 3)) owner.GroupAdd("room", c);
    SendText(owner, "in.me1!0", "before");
    std::string how = DieAtFaultPoint(Options(name), point, [&](Layer& child) {
      SendText(child, "in.me1!1", "dying");
    });
    CHECK_EQ(how, std::string("SIGKILL"));
    CHECK_CLEAN(owner);
    std::vector<InboxMessage> want = {{"before", {"in.me1!0"}}};
    if (point == 2) want.push_back({"dying", {"in.me1!1"}});  // linked: published
    CHECK_MESSAGES(ReceiveInbox(owner, "in.me1!", 10), want);
    how = DieAtFaultPoint(Options(name), point, [&](Layer& child) {
      GroupSendText(child, "room", "group");
    });
    CHECK_EQ(how, std::string("SIGKILL"));
    CHECK_CLEAN(owner);
    std::vector<InboxMessage> got = ReceiveInbox(owner, "in.me1!", 10);
    CHECK_EQ(got.size(), point == 2 ? 1u : 0u);
    CHECK_EQ(GroupSendText(owner, "room", "after"), 3u);
    CHECK_EQ(ReceiveInbox(owner, "in.me1!", 10).at(0).targets.size(), 3u);
    CHECK_EQ(owner.Stats().arena_used_bytes, 0u);
    CHECK_CLEAN(owner);
  }
}

TEST(recovery_rebuilds_fans_from_the_members_alone) {
  // A flush-free way to force a full recovery: a holder dies at the lock's first step.
  TempName name;
  Layer owner(Client(name, "me1"));
  for (const std::string& c : Names("in.me1!", 10)) owner.GroupAdd("room", c);
  for (const std::string& c : Names("in.me1!", 4)) owner.GroupAdd("hall", c);
  owner.GroupAdd("room", "plain");
  CHECK_EQ(DieAtFaultPoint(Options(name), 15, [&](Layer& child) { child.Stats(); }),
           std::string("SIGKILL"));
  CHECK_CLEAN(owner);
  CHECK_EQ(owner.Stats().lock_recoveries, 1u);
  CHECK_EQ(owner.Stats().members, 15u);
  CHECK_EQ(GroupSendText(owner, "room", "r"), 11u);
  CHECK_EQ(GroupSendText(owner, "hall", "h"), 4u);
  CHECK_EQ(owner.Stats().queued, 3u);
  std::vector<InboxMessage> got = ReceiveInbox(owner, "in.me1!", 10);
  CHECK_EQ(got.size(), 2u);
  CHECK_EQ(got.at(0).targets.size(), 10u);
  CHECK_EQ(got.at(1).targets.size(), 4u);
  CHECK_CLEAN(owner);
}

// ---------------------------------------------------------------------------------------------
// Hostile input: an inbox node's target and a fan's list are indices read from shared memory.

TEST(inbox_scribbled_targets_and_fan_lists_are_checked_not_followed) {
  TempName name;
  Layer owner(Client(name, "me1"));
  for (const std::string& c : Names("in.me1!", 3)) owner.GroupAdd("room", c);
  SendText(owner, "in.me1!0", "direct");
  CHECK_EQ(GroupSendText(owner, "room", "group"), 3u);
  int fd = open(name.path().c_str(), O_RDWR);
  struct stat st;
  CHECK(fd >= 0 && fstat(fd, &st) == 0);
  void* map = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED,
                   fd, 0);
  close(fd);
  CHECK(map != MAP_FAILED);
  auto* base = static_cast<uint8_t*>(map);
  auto& h = *reinterpret_cast<shmch::Header*>(base);
  auto* nodes = reinterpret_cast<shmch::Node*>(base + h.nodes_offset);
  auto* members = reinterpret_cast<shmch::Member*>(base + h.members_offset);
  // Every queued node's target far out of range, every fan's first member out of range.
  for (uint32_t n = 0; n < h.node_records; ++n) {
    if (nodes[n].target != shmch::kNil) {
      nodes[n].target = (nodes[n].target & shmch::kGroupTarget) ? shmch::kGroupTarget | 0x7fff0000u
                                                                 : 0x7fff0000u;
    }
  }
  std::vector<InboxMessage> got = ReceiveInbox(owner, "in.me1!", 10);
  CHECK(got.empty());  // nothing they name exists: taken, handed to nobody
  CHECK_EQ(owner.Stats().queued, 0u);
  CHECK_EQ(GroupSendText(owner, "room", "again"), 3u);
  for (uint32_t m = 0; m < h.member_records; ++m) {
    if (members[m].in_use == shmch::kFanRecord) members[m].next_peer = 0x7fff0000u;
  }
  bool refused = false;
  try {
    ReceiveInbox(owner, "in.me1!", 10);
  } catch (const Error& e) {
    refused = e.code() == ErrorCode::kCorrupt;
  }
  CHECK(refused);  // reported as corruption, never followed
  // The next holder repairs: fans rebuilt from the members.
  CHECK_CLEAN(owner);
  CHECK_EQ(GroupSendText(owner, "room", "repaired"), 3u);
  std::vector<InboxMessage> after = ReceiveInbox(owner, "in.me1!", 10);
  CHECK(!after.empty());
  CHECK_EQ(after.back().text, std::string("repaired"));
  CHECK_EQ(after.back().targets.size(), 3u);
  munmap(map, static_cast<size_t>(st.st_size));
  CHECK_CLEAN(owner);
}

// verify() knows the inbox's derived state and its invariants: a fan's cached count of
// unexpired members (a group send's result), and that a node's direct target is a channel of
// the inbox that holds it.
TEST(inbox_verify_reports_a_wrong_fan_count_and_a_target_of_another_inbox) {
  TempName name;
  Layer owner(Client(name, "me1"));
  for (const std::string& c : Names("in.me1!", 3)) owner.GroupAdd("room", c);
  owner.GroupAdd("room", "plain");
  SendText(owner, "in.me1!0", "direct");
  CHECK_EQ(GroupSendText(owner, "room", "group"), 4u);  // counts the fan: its cache is set
  CHECK_CLEAN(owner);
  int fd = open(name.path().c_str(), O_RDWR);
  struct stat st;
  CHECK(fd >= 0 && fstat(fd, &st) == 0);
  void* map = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED,
                   fd, 0);
  close(fd);
  CHECK(map != MAP_FAILED);
  auto* base = static_cast<uint8_t*>(map);
  auto& h = *reinterpret_cast<shmch::Header*>(base);
  auto* nodes = reinterpret_cast<shmch::Node*>(base + h.nodes_offset);
  auto* members = reinterpret_cast<shmch::Member*>(base + h.members_offset);
  uint32_t plain = shmch::kNil;
  for (uint32_t m = 0; m < h.member_records; ++m) {
    if (members[m].in_use == shmch::kFanRecord) members[m].live_peers += 5;
    if (members[m].in_use == 1 && members[m].fan == shmch::kNil) plain = members[m].channel;
  }
  CHECK(plain != shmch::kNil);
  for (uint32_t n = 0; n < h.node_records; ++n) {
    if (nodes[n].target != shmch::kNil && !(nodes[n].target & shmch::kGroupTarget)) {
      nodes[n].target = plain;  // a live record, but not a channel of this inbox
    }
  }
  std::string all;
  for (const std::string& p : owner.Verify()) all += p + "; ";
  CHECK(all.find("fan's count of unexpired members is wrong") != std::string::npos);
  CHECK(all.find("targets a channel of another inbox") != std::string::npos);
  munmap(map, static_cast<size_t>(st.st_size));
  owner.Flush();
  CHECK_CLEAN(owner);
}

// A membership's expiry is judged at the send, as a group send to its own queue would be: a
// message sent while it was live still reaches it after it expired; one sent after does not.
TEST(inbox_group_delivery_follows_membership_expiry_at_send_time) {
  TempName name;
  LayerOptions options = Client(name, "me1");
  options.group_expiry_ms = 40;
  Layer owner(options);
  owner.GroupAdd("room", "in.me1!a");
  owner.GroupAdd("room", "plain");
  CHECK_EQ(GroupSendText(owner, "room", "live"), 2u);
  usleep(60'000);
  CHECK(owner.Maintain());  // the sweep leaves the '!' member for a message lifetime
  CHECK_MESSAGES(ReceiveInbox(owner, "in.me1!", 10), {{"live", {"in.me1!a"}}});
  owner.GroupAdd("room", "plain");  // refreshed: the group lives on, the '!' member has expired
  CHECK_EQ(GroupSendText(owner, "room", "late"), 1u);  // "plain" only: the count is exact
  CHECK(ReceiveInbox(owner, "in.me1!", 10).empty());
  CHECK_EQ(owner.Stats().queued, 2u);  // "plain"'s two: no inbox node for a fan with no live member
  CHECK_EQ(owner.GroupMembers("room"), std::vector<std::string>{"plain"});
  owner.GroupAdd("room", "in.me1!a");  // live again
  CHECK_EQ(GroupSendText(owner, "room", "again"), 2u);
  CHECK_MESSAGES(ReceiveInbox(owner, "in.me1!", 10), {{"again", {"in.me1!a"}}});
  CHECK_CLEAN(owner);
}

// A '!' membership that lapsed and is added again (within the message lifetime housekeeping
// keeps it) is a new membership: a group message sent while it had lapsed, still in the inbox
// when it comes back, is not for it (only "b" was reached when it was sent), and the stats count
// each delivery once.
TEST(inbox_group_delivery_sent_while_a_member_had_lapsed_does_not_reach_it_when_it_rejoins) {
  TempName name;
  LayerOptions options = Client(name, "me1");
  options.group_expiry_ms = 40;
  Layer owner(options);
  owner.GroupAdd("room", "in.me1!a");
  owner.GroupAdd("room", "in.me1!b");
  usleep(60'000);
  owner.GroupAdd("room", "in.me1!b");  // "b" refreshed, "a" has lapsed
  CHECK_EQ(GroupSendText(owner, "room", "gap"), 1u);
  owner.GroupAdd("room", "in.me1!a");  // back, after the send
  CHECK_MESSAGES(ReceiveInbox(owner, "in.me1!", 10), {{"gap", {"in.me1!b"}}});
  CHECK_EQ(owner.Stats().messages_sent, 1u);
  CHECK_EQ(owner.Stats().messages_received, 1u);
  CHECK_EQ(GroupSendText(owner, "room", "both"), 2u);
  std::vector<InboxMessage> both = ReceiveInbox(owner, "in.me1!", 10);
  CHECK_EQ(both.size(), 1u);
  CHECK_EQ(both.at(0).targets.size(), 2u);
  CHECK_CLEAN(owner);
}

// receive() with wanted 0 and extra N: what is queued now, within the byte budget, and no wait.
TEST(inbox_receive_of_extra_only_takes_what_is_there_and_registers_no_wait) {
  TempName name;
  Layer owner(Client(name, "me1"));
  shmch::ReceivedBatch batch;
  owner.Receive({{"in.me1!", 0, 8}}, batch, false, 1 << 20);
  CHECK(batch.length_of.empty());
  CHECK_EQ(owner.Stats().channels, 0u);  // no record made to wait on
  for (int i = 0; i < 3; ++i) SendText(owner, "in.me1!a", "m" + std::to_string(i));
  batch.Clear();
  owner.Receive({{"in.me1!", 0, 2}}, batch, false, 1 << 20);
  CHECK_EQ(batch.length_of.size(), 2u);
  CHECK_EQ(batch.target_count_of, (std::vector<uint32_t>{1, 1}));
  batch.Clear();
  owner.Receive({{"in.me1!", 0, 8}}, batch, false, 1);  // the budget holds no message
  CHECK(batch.length_of.empty());
  CHECK_MESSAGES(ReceiveInbox(owner, "in.me1!", 10), {{"m2", {"in.me1!a"}}});
  CHECK_CLEAN(owner);
}

// A retry of a refused large send asks first whether it would be refused again: for a '!'
// channel the answer is its instance's inbox's, and the look creates no record.
TEST(inbox_refuses_as_full_answers_for_the_inbox) {
  TempName name;
  LayerOptions options = Client(name, "me1");
  options.capacity = 2;
  Layer owner(options);
  uint32_t capacity = 0;
  CHECK(!owner.RefusesAsFull("in.me1!a", capacity));
  CHECK_EQ(owner.Stats().channels, 0u);
  SendText(owner, "in.me1!a", "1");
  SendText(owner, "in.me1!b", "2");
  // Full at the inbox: a channel of it that holds nothing, or has no record, is refused too.
  CHECK(owner.RefusesAsFull("in.me1!a", capacity));
  CHECK(owner.RefusesAsFull("in.me1!c", capacity));
  CHECK_EQ(capacity, 2u);
  CHECK_EQ(owner.Stats().queued, 2u);
  CHECK_EQ(ReceiveInbox(owner, "in.me1!", 1).size(), 1u);
  CHECK(!owner.RefusesAsFull("in.me1!c", capacity));
  CHECK_CLEAN(owner);
}

// The capacity refusesAsFull() checks a '!' channel against is its own name's, as a send's is,
// also when the channel has no record yet (the inbox name's globs may give another).
TEST(inbox_refuses_as_full_uses_the_channel_names_capacity) {
  TempName name;
  LayerOptions options = Client(name, "me1");
  options.capacity = 2;
  options.channel_capacity = {{"in.me1!big*", 5}};
  Layer owner(options);
  uint32_t capacity = 0;
  SendText(owner, "in.me1!a", "1");
  SendText(owner, "in.me1!a", "2");
  CHECK(owner.RefusesAsFull("in.me1!a", capacity));
  CHECK_EQ(capacity, 2u);
  CHECK(!owner.RefusesAsFull("in.me1!big1", capacity));  // 2 < 5: a send would be queued
  CHECK_EQ(owner.Stats().channels, 2u);  // the inbox and in.me1!a: no record made for big1
  SendText(owner, "in.me1!big1", "3");
  SendText(owner, "in.me1!big2", "4");
  SendText(owner, "in.me1!big3", "5");
  CHECK(owner.RefusesAsFull("in.me1!big4", capacity));  // 5 >= 5
  CHECK_EQ(capacity, 5u);
  CHECK_THROWS(SendText(owner, "in.me1!big4", "6"), ErrorCode::kChannelFull);
  CHECK_CLEAN(owner);
}

// Hostile input: an inbox node's direct target is an index read from shared memory. One naming
// an in-use record that is not a channel of this inbox (a named channel, another process's '!'
// channel) is dropped at receive, not handed to the owner under a name it does not own.
TEST(inbox_direct_target_of_another_inbox_or_a_named_channel_is_dropped) {
  TempName name;
  Layer owner(Client(name, "me1"));
  Layer other(Client(name, "yo2"));
  SendText(owner, "plain", "p");
  other.GroupAdd("room", "in.yo2!x");  // keeps its record
  SendText(owner, "in.me1!a", "1");
  SendText(owner, "in.me1!a", "2");
  SendText(owner, "in.me1!a", "3");
  int fd = open(name.path().c_str(), O_RDWR);
  struct stat st;
  CHECK(fd >= 0 && fstat(fd, &st) == 0);
  void* map = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED,
                   fd, 0);
  close(fd);
  CHECK(map != MAP_FAILED);
  auto* base = static_cast<uint8_t*>(map);
  auto& h = *reinterpret_cast<shmch::Header*>(base);
  auto* channels = reinterpret_cast<shmch::Channel*>(base + h.channels_offset);
  auto* nodes = reinterpret_cast<shmch::Node*>(base + h.nodes_offset);
  auto record_of = [&](const std::string& wanted) {
    for (uint32_t i = 0; i < h.channel_records; ++i) {
      if (channels[i].in_use == 1 &&
          std::string(channels[i].name, channels[i].name_length) == wanted) {
        return i;
      }
    }
    return shmch::kNil;
  };
  const uint32_t a = record_of("in.me1!a"), plain = record_of("plain"), x = record_of("in.yo2!x");
  CHECK(a != shmch::kNil && plain != shmch::kNil && x != shmch::kNil);
  // The first entry now names "plain", the second the other instance's channel.
  uint32_t renamed = 0;
  for (uint32_t n = 0; n < h.node_records && renamed < 2; ++n) {
    if (nodes[n].block != shmch::kNil && nodes[n].target == a) {
      nodes[n].target = renamed++ == 0 ? plain : x;
    }
  }
  CHECK_EQ(renamed, 2u);
  std::vector<InboxMessage> got = ReceiveInbox(owner, "in.me1!", 10);
  CHECK_EQ(got.size(), 1u);
  CHECK_EQ(got.at(0).targets, std::vector<std::string>{"in.me1!a"});
  CHECK_EQ(ReceiveText(owner, "plain", 5), std::vector<std::string>{"p"});
  munmap(map, static_cast<size_t>(st.st_size));
  // The scribble moved two of in.me1!a's references away: verify reports its count, a flush
  // (or any recovery) rebuilds it.
  CHECK(!owner.Verify().empty());
  owner.Flush();
  CHECK_CLEAN(owner);
}

// A receive that empties its inbox keeps the owner's wait there and says so, so the owner's next
// receive need not call in only to find it empty: the next entry rings it. One that leaves entries
// behind, asks for none (wanted 0) or empties a channel that is not an inbox withdraws its wait.
TEST(inbox_emptied_by_a_receive_keeps_the_wait_and_is_reported) {
  TempName name;
  Layer owner(Client(name, "me1"));
  Layer sender(Options(name));
  shmch::ReceivedBatch batch;
  SendText(sender, "in.me1!a", "1");
  owner.Receive({{"in.me1!", 1}}, batch);
  CHECK_EQ(batch.request_of.size(), size_t{1});
  CHECK_EQ(batch.emptied.size(), size_t{1});
  CHECK_EQ(batch.emptied[0], 0u);
  owner.TakeBell();  // whatever rang before is not what this test looks at
  SendText(sender, "in.me1!a", "2");
  CHECK(owner.TakeBell());  // the kept wait: the entry rang us
  // Two entries, one wanted and none extra: one is left behind, the wait is withdrawn.
  SendText(sender, "in.me1!a", "3");
  batch.Clear();
  owner.Receive({{"in.me1!", 1}}, batch);
  CHECK_EQ(batch.request_of.size(), size_t{1});
  CHECK(batch.emptied.empty());
  owner.TakeBell();
  SendText(sender, "in.me1!a", "4");
  CHECK(!owner.TakeBell());
  // Wanted 0 with extra: takes what is there, waits for nothing.
  batch.Clear();
  owner.Receive({{"in.me1!", 0, 10}}, batch, false, 1 << 20);
  CHECK_EQ(batch.request_of.size(), size_t{2});
  CHECK(batch.emptied.empty());
  SendText(sender, "in.me1!a", "5");
  CHECK(!owner.TakeBell());
  // In a batch of several requests, only the inbox emptied is listed, by its index.
  SendText(sender, "named", "6");
  batch.Clear();
  owner.Receive({{"named", 1}, {"in.me1!", 1}}, batch);
  CHECK_EQ(batch.request_of.size(), size_t{2});
  CHECK_EQ(batch.emptied.size(), size_t{1});
  CHECK_EQ(batch.emptied[0], 1u);
  owner.TakeBell();
  SendText(sender, "named", "7");
  CHECK(!owner.TakeBell());  // a named channel emptied withdraws its wait: others may wait there
  CHECK_EQ(ReceiveText(owner, "named", 1).size(), size_t{1});
  owner.Unwait({"in.me1!", "named"});
}
