// Rebuilding derived state after a lock holder died, and checking that state (Verify).
//
// Primary data: records' in_use flags and names, members' (group, channel, expiry), each queue's
// chain of nodes from its head, the block each queued node references, and the blocks attached
// slots hold outside any queue (Slot::held, payload.cc). Everything else (bucket
// chains, tails, counts, member lists, refcounts, the node free list and the page bitmap) is
// derived and is recomputed from the primary data alone. Each operation publishes primary data
// with its last write, so a holder killed at any instant leaves either the old state or the new
// one, and recovery makes the derived state agree with it.
#include <string>
#include <vector>

#include "clock.h"
#include "critical.h"
#include "fault_points.h"
#include "layer.h"
#include "tables.h"

namespace shmch {

namespace {

// Node::target recovery gives an inbox node whose direct target record is gone: a group that
// cannot exist, so the node resolves to no channel and is dropped, counted orphaned.
constexpr uint32_t kLostTarget = kGroupTarget | 0x7ffffffeu;

// A record's name, its length read once by the caller: checked before anything is read.
bool ValidName(const char* name, uint32_t length, bool allow_bang) {
  return length <= kMaxNameLength && Layer::IsValidName(std::string_view(name, length), allow_bang);
}

// Puts a channel or group record back into its table's hash, counted in `used`, when its name
// is valid and not taken yet; otherwise frees it (a bad or duplicate name can only come from
// corruption). Returns whether the record stays.
template <typename Table, typename Record>
bool Relink(Table& table, Record& record, uint32_t index, bool allow_bang, uint32_t& used) {
  const uint32_t name_length = LoadOnce(record.name_length);  // checked and used: read once
  if (record.in_use != 1 || !ValidName(record.name, name_length, allow_bang)) {
    record.in_use = 0;
    return false;
  }
  std::string_view name(record.name, name_length);
  record.hash = HashName(name);
  if (table.Find(name) != kNil) {
    record.in_use = 0;
    return false;
  }
  table.Link(index);
  ++used;
  return true;
}

}  // namespace

void Layer::Recover() {
  FAULT_POINT(14);
  Segment& seg = *segment_;
  Header& h = seg.header();
  std::vector<uint8_t> node_live(seg.node_records(), 0);
  std::vector<uint32_t> refs(seg.page_count(),
                             0);  // first page of a live block -> queued references
  arena_->ClearAll();

  // Channels and their queues.
  uint64_t next_seq = 0;  // above every queued node's Node::seq
  auto channels = Channels(seg);
  channels.ClearBuckets();
  h.channels_used = 0;
  for (uint32_t ci = 0; ci < seg.channel_records(); ++ci) {
    Channel& c = seg.channel(ci);
    c.inbox_refs = 0;
    if (!Relink(channels, c, ci, true, h.channels_used)) continue;
    c.memberships = 0;
    uint32_t* link = &c.head;
    uint32_t tail = kNil, count = 0;
    while (*link != kNil) {
      uint32_t n = *link;
      bool ok = n < seg.node_records() && !node_live[n];
      uint32_t block = ok ? LoadOnce(seg.node(n).block) : kNil;
      // Read once and checked: the page range marked below is the one that was checked.
      BlockInfo info = ok ? seg.ReadBlock(block) : BlockInfo{};
      ok = ok && info.message;
      if (ok && refs[block] == 0) {
        uint32_t pages = info.pages;
        for (uint32_t p = block; ok && p < block + pages; ++p) ok = !arena_->IsMarked(p);
        if (ok) arena_->MarkLive(block, pages);
      }
      if (!ok) {
        *link = kNil;  // cut the queue here: what follows cannot be trusted
        break;
      }
      node_live[n] = 1;
      if (seg.node(n).seq >= next_seq) next_seq = seg.node(n).seq + 1;
      ++refs[block];
      tail = n;
      ++count;
      link = &seg.node(n).next;
    }
    c.tail = tail;
    c.count = count;
    // The dead holder may have queued a message without ringing its waiters: ring them now.
    if (count) WakeWaiters(c, ci, true);
  }
  // Blocks attached slots hold outside any queue (payload.cc) are references too. A dead slot's
  // holds are counted here and released when ReclaimDeadSlots (below) reclaims it.
  for (uint32_t si = 0; si < kMaxSlots; ++si) {
    Slot& slot = seg.slot(si);
    if (slot.state.load(std::memory_order_acquire) == 0) continue;
    for (uint32_t e = 0; e < kHeldBlocks; ++e) {
      const uint32_t value = LoadOnce(slot.held[e]);
      if (value == 0) continue;
      const uint32_t block = value - 1;
      BlockInfo info = seg.ReadBlock(block);  // read once and checked, as a queued block
      bool ok = info.message;
      if (ok && refs[block] == 0) {
        for (uint32_t p = block; ok && p < block + info.pages; ++p) ok = !arena_->IsMarked(p);
        if (ok) arena_->MarkLive(block, info.pages);
      }
      if (!ok) {
        slot.held[e] = 0;
        continue;
      }
      ++refs[block];
    }
  }
  // Inbox nodes' direct targets keep their records (Channel::inbox_refs). A node naming a
  // record that is not a live channel any more would name whatever reuses it: it is made to name
  // nothing (its receiver drops it, counted orphaned).
  for (uint32_t n = 0; n < seg.node_records(); ++n) {
    if (!node_live[n]) continue;
    Node& node = seg.node(n);
    const uint32_t target = LoadOnce(node.target);
    if (target == kNil || (target & kGroupTarget)) continue;
    if (target < seg.channel_records() && seg.channel(target).in_use == 1) {
      ++seg.channel(target).inbox_refs;
    } else {
      node.target = kLostTarget;
    }
  }
  for (uint32_t p = 0; p < seg.page_count(); ++p) {
    if (refs[p]) reinterpret_cast<BlockHeader*>(seg.page(p))->refcount = refs[p];
  }
  arena_->Rebuild();  // chunk accounting from the bitmap; reservations a crash left are punched
  // New messages must come after every queued one (receiveAny's order) and after every
  // membership (a member must not miss group deliveries sent after it joined).
  for (uint32_t mi = 0; mi < seg.member_records(); ++mi) {
    const Member& m = seg.member(mi);
    const uint64_t added = LoadOnce(m.added_seq);
    if (m.in_use == 1 && added >= next_seq && added != UINT64_MAX) next_seq = added + 1;
  }
  if (h.next_seq < next_seq) h.next_seq = next_seq;
  h.free_node = kNil;
  h.free_nodes = 0;
  for (uint32_t n = seg.node_records(); n-- > 0;) {
    if (!node_live[n]) FreeNode(n);
  }

  // Groups, then members linked into them.
  auto groups = Groups(seg);
  groups.ClearBuckets();
  h.groups_used = 0;
  for (uint32_t gi = 0; gi < seg.group_records(); ++gi) {
    Group& g = seg.group(gi);
    if (!Relink(groups, g, gi, false, h.groups_used)) continue;
    g.first_member = kNil;
    g.member_count = 0;
  }
  for (uint32_t b = 0; b < seg.member_buckets(); ++b) seg.member_bucket(b) = kNil;
  h.members_used = 0;
  h.fans_used = 0;
  // Fans are derived: all go first (so their records are free to remake them), then every '!'
  // member finds or makes the fan of (group, its inbox).
  for (uint32_t mi = 0; mi < seg.member_records(); ++mi) {
    Member& m = seg.member(mi);
    if (m.in_use != 1) m.in_use = 0;
  }
  uint32_t free_rover = 0;  // records below it are taken (a scan for free ones goes up only)
  auto free_record = [&]() -> uint32_t {
    for (; free_rover < seg.member_records(); ++free_rover) {
      if (seg.member(free_rover).in_use == 0) return free_rover++;
    }
    return kNil;
  };
  for (uint32_t mi = 0; mi < seg.member_records(); ++mi) {
    Member& m = seg.member(mi);
    if (m.in_use != 1) continue;  // free, or a fan made in this pass
    const uint32_t group = LoadOnce(m.group), channel = LoadOnce(m.channel);
    bool ok = group < seg.group_records() && seg.group(group).in_use == 1 &&
              channel < seg.channel_records() && seg.channel(channel).in_use == 1 &&
              FindMember(group, channel) == kNil;
    uint32_t fan = kNil;
    if (ok) {
      // The channel's name was checked when its record was relinked above.
      const Channel& c = seg.channel(channel);
      std::string_view inbox_name = InboxOf(std::string_view(c.name, c.name_length));
      if (!inbox_name.empty()) {
        // Its inbox record was kept by the fan before the crash; none (or no record left for the
        // fan) can only come from corruption: the membership goes.
        const uint32_t inbox = channels.Find(inbox_name);
        fan = inbox == kNil ? kNil : FindFan(group, inbox);
        if (inbox != kNil && fan == kNil) {
          fan = free_record();
          if (fan != kNil) {
            LinkFan(fan, group, inbox);
            seg.member(fan).expires_at_ms = 0;  // its live members are counted when next used
          }
        }
        ok = fan != kNil;
      }
    }
    if (!ok) {
      m.in_use = 0;
      continue;
    }
    Group& g = seg.group(group);
    m.group = group;
    m.channel = channel;
    m.fan = fan;
    m.prev_peer = kNil;
    m.next_peer = kNil;
    m.peer_count = 0;
    m.prev_in_group = kNil;
    m.next_in_group = kNil;
    if (fan == kNil) {
      LinkIntoGroupList(mi, g);
    } else {
      Member& f = seg.member(fan);
      m.next_peer = f.next_peer;
      if (f.next_peer != kNil) seg.member(f.next_peer).prev_peer = mi;
      f.next_peer = mi;
      ++f.peer_count;
    }
    ++g.member_count;
    uint32_t& bucket = seg.member_bucket(HashPair(group, channel) & (seg.member_buckets() - 1));
    m.next_in_hash = bucket;
    bucket = mi;
    ++h.members_used;
    ++seg.channel(channel).memberships;
  }
  for (uint32_t gi = 0; gi < seg.group_records(); ++gi) {
    if (seg.group(gi).in_use == 1 && seg.group(gi).first_member == kNil) {
      groups.Remove(gi, h.groups_used);
    }
  }
  ReclaimDeadSlots();
  for (uint32_t ci = 0; ci < seg.channel_records(); ++ci) MaybeReleaseChannel(ci);
  // Ready lists may name records that moved or vanished: everyone looks at everything once.
  MarkAllReady();
}

void Layer::RepairIfCorrupted() noexcept {
  if (!segment_->TakeCorruptionSeen()) return;
  try {
    Recover();
  } catch (...) {
    // Recovery only follows indices it has checked; should it still fail, the next operation
    // finds the corruption again and retries.
  }
  segment_->TakeCorruptionSeen();
}

std::vector<std::string> Layer::Verify() {
  CheckOpen();
  Critical guard(*this);
  Segment& seg = *segment_;
  Header& h = seg.header();
  std::vector<std::string> problems;
  auto problem = [&](std::string text) {
    if (problems.size() < 100) problems.push_back(std::move(text));
  };
  std::vector<uint8_t> node_seen(seg.node_records(), 0);
  std::vector<uint32_t> refs(seg.page_count(), 0);
  std::vector<uint8_t> page_owned(seg.page_count(), 0);
  std::vector<uint32_t> memberships(seg.channel_records(), 0);
  std::vector<uint32_t> queue_of(seg.node_records(), kNil);  // the channel whose queue holds it
  const uint64_t now = MonotonicMs();
  auto channels = Channels(seg);
  auto groups = Groups(seg);

  uint32_t channels_used = 0;
  for (uint32_t ci = 0; ci < seg.channel_records(); ++ci) {
    Channel& c = seg.channel(ci);
    if (c.in_use == 0) continue;
    std::string label = "channel #" + std::to_string(ci);
    const uint32_t name_length = LoadOnce(c.name_length);  // checked and used: read once
    if (c.in_use != 1 || !ValidName(c.name, name_length, true)) {
      problem(label + " has a bad in_use flag or name");
      continue;
    }
    ++channels_used;
    std::string_view name(c.name, name_length);
    if (channels.Find(name) != ci) problem(label + " is not reachable through its hash bucket");
    uint32_t n = c.head, last = kNil, count = 0;
    while (n != kNil) {
      if (n >= seg.node_records() || node_seen[n]) {
        problem(label + " queue has a bad or shared node " + std::to_string(n));
        break;
      }
      node_seen[n] = 1;
      queue_of[n] = ci;
      uint32_t block = LoadOnce(seg.node(n).block);
      BlockInfo info = seg.ReadBlock(block);
      if (!info.message) {
        problem(label + " queue references a damaged block");
        break;
      }
      if (refs[block]++ == 0) {
        uint32_t pages = info.pages;
        for (uint32_t p = block; p < block + pages; ++p) {
          if (page_owned[p]++) problem("page " + std::to_string(p) + " belongs to two blocks");
          if (!arena_->IsMarked(p)) problem("live page " + std::to_string(p) + " is marked free");
        }
      }
      last = n;
      ++count;
      n = seg.node(n).next;
    }
    if (c.tail != last) problem(label + " tail does not end its queue");
    if (c.count != count) {
      problem(label + " count " + std::to_string(c.count) + " but queue holds " +
              std::to_string(count));
    }
  }
  if (channels_used != h.channels_used) problem("channels_used disagrees with the table");
  for (uint32_t si = 0; si < kMaxSlots; ++si) {
    const Slot& slot = seg.slot(si);
    if (slot.state.load(std::memory_order_acquire) == 0) continue;
    for (uint32_t e = 0; e < kHeldBlocks; ++e) {
      const uint32_t value = LoadOnce(slot.held[e]);
      if (value == 0) continue;
      const uint32_t block = value - 1;
      BlockInfo info = seg.ReadBlock(block);
      if (!info.message) {
        problem("slot " + std::to_string(si) + " holds a damaged block");
        continue;
      }
      if (refs[block]++ == 0) {
        for (uint32_t p = block; p < block + info.pages; ++p) {
          if (page_owned[p]++) problem("page " + std::to_string(p) + " belongs to two blocks");
          if (!arena_->IsMarked(p)) problem("held page " + std::to_string(p) + " is marked free");
        }
      }
    }
  }

  uint32_t used_pages = 0;
  for (uint32_t p = 0; p < seg.page_count(); ++p) {
    if (refs[p] && reinterpret_cast<BlockHeader*>(seg.page(p))->refcount != refs[p]) {
      problem("block at page " + std::to_string(p) + " has a wrong refcount");
    }
    if (arena_->IsMarked(p)) {
      ++used_pages;
      if (!page_owned[p]) problem("page " + std::to_string(p) + " is marked used but unreferenced");
    }
  }
  if (used_pages != h.used_pages) problem("used_pages disagrees with the bitmap");
  {
    std::vector<std::string> arena_problems;
    arena_->Check(arena_problems);
    for (std::string& p : arena_problems) problem(std::move(p));
  }

  uint32_t free_count = 0;
  for (uint32_t n = h.free_node; n != kNil; n = seg.node(n).next) {
    if (n >= seg.node_records() || node_seen[n]) {
      problem("node free list has a bad, queued or repeated node " + std::to_string(n));
      break;
    }
    node_seen[n] = 2;
    ++free_count;
  }
  if (free_count != h.free_nodes) problem("free_nodes disagrees with the free list");
  for (uint32_t n = 0; n < seg.node_records(); ++n) {
    if (!node_seen[n]) {
      problem("node " + std::to_string(n) + " is neither queued nor free (leaked)");
      break;
    }
  }

  uint32_t groups_used = 0, members_used = 0, fans_used = 0;
  for (uint32_t gi = 0; gi < seg.group_records(); ++gi) {
    Group& g = seg.group(gi);
    if (g.in_use == 0) continue;
    std::string label = "group #" + std::to_string(gi);
    const uint32_t name_length = LoadOnce(g.name_length);  // checked and used: read once
    if (g.in_use != 1 || !ValidName(g.name, name_length, false)) {
      problem(label + " has a bad in_use flag or name");
      continue;
    }
    ++groups_used;
    if (groups.Find(std::string_view(g.name, name_length)) != gi) {
      problem(label + " is not reachable through its hash bucket");
    }
    uint32_t count = 0, prev = kNil, steps = 0;
    for (uint32_t m = g.first_member; m != kNil; m = seg.member(m).next_in_group) {
      if (m >= seg.member_records() || ++steps > seg.member_records()) {
        problem(label + " member list is broken");
        break;
      }
      Member& mem = seg.member(m);
      if (mem.prev_in_group != prev) problem(label + " member back-link is wrong");
      prev = m;
      if (mem.channel < seg.channel_records()) ++memberships[mem.channel];
      if (mem.in_use == kFanRecord && mem.group == gi) {
        // A fan: its '!' members hang off it, each for its own channel.
        ++fans_used;
        if (FindFan(gi, mem.channel) != m) problem(label + " fan missing from member hash");
        uint32_t peers = 0, prev_peer = kNil, live = 0;
        for (uint32_t p = mem.next_peer; p != kNil; p = seg.member(p).next_peer) {
          if (p >= seg.member_records() || ++steps > seg.member_records()) {
            problem(label + " fan member list is broken");
            break;
          }
          Member& peer = seg.member(p);
          if (peer.in_use != 1 || peer.group != gi || peer.fan != m) {
            problem(label + " fan lists a foreign member");
          }
          if (peer.prev_peer != prev_peer) problem(label + " fan member back-link is wrong");
          if (peer.channel < seg.channel_records()) ++memberships[peer.channel];
          if (peer.expires_at_ms > now) ++live;
          if (FindMember(gi, peer.channel) != p) {
            problem(label + " member missing from member hash");
          }
          prev_peer = p;
          ++peers;
        }
        if (peers != mem.peer_count) problem(label + " fan peer_count disagrees with its list");
        if (peers == 0) problem(label + " has an empty fan");
        // Its count of unexpired members (a group send's result) holds until the earliest of
        // them expires; 0 means "count again".
        if (mem.expires_at_ms > now && mem.live_peers != live) {
          problem(label + " fan's count of unexpired members is wrong");
        }
        count += peers;
        continue;
      }
      if (mem.in_use != 1 || mem.group != gi || mem.fan != kNil) {
        problem(label + " lists a foreign member");
      }
      if (FindMember(gi, mem.channel) != m) problem(label + " member missing from member hash");
      ++count;
    }
    if (count != g.member_count) problem(label + " member_count disagrees with its list");
    if (count == 0) problem(label + " is empty but still allocated");
    members_used += count;
  }
  if (groups_used != h.groups_used) problem("groups_used disagrees with the table");
  if (fans_used != h.fans_used) problem("fans_used disagrees with group lists");
  if (members_used + fans_used != h.members_used) {
    problem("members_used disagrees with group lists");
  }
  // Inbox nodes' direct targets, counted in Channel::inbox_refs.
  std::vector<uint32_t> inbox_refs(seg.channel_records(), 0);
  for (uint32_t n = 0; n < seg.node_records(); ++n) {
    if (node_seen[n] != 1) continue;
    const uint32_t target = LoadOnce(seg.node(n).target);
    if (target == kNil) continue;
    // Only an inbox ('<prefix>.<client>!') holds nodes with a target, and a direct one names a
    // channel of that inbox.
    const Channel& queue = seg.channel(queue_of[n]);
    const std::string_view queue_name(queue.name, queue.name_length);
    if (InboxOf(queue_name) != queue_name) {
      problem("node " + std::to_string(n) + " has a target but is not in an inbox");
      continue;
    }
    if (target & kGroupTarget) continue;
    if (target >= seg.channel_records() || seg.channel(target).in_use != 1) {
      problem("node " + std::to_string(n) + " targets a channel record that is not in use");
      continue;
    }
    const Channel& to = seg.channel(target);
    const uint32_t to_length = LoadOnce(to.name_length);
    if (to_length > kMaxNameLength ||
        InboxOf(std::string_view(to.name, to_length)) != queue_name) {
      problem("node " + std::to_string(n) + " targets a channel of another inbox");
    }
    ++inbox_refs[target];
  }
  for (uint32_t ci = 0; ci < seg.channel_records(); ++ci) {
    Channel& c = seg.channel(ci);
    if (c.in_use == 1 && c.memberships != memberships[ci]) {
      problem("channel #" + std::to_string(ci) + " membership count is wrong");
    }
    if (c.in_use == 1 && c.inbox_refs != inbox_refs[ci]) {
      problem("channel #" + std::to_string(ci) + " inbox reference count is wrong");
    }
  }
  return problems;
}

}  // namespace shmch
