// Groups and their memberships: finding, making and unlinking member records (each in its
// group's list and in the member hash). Called with the segment lock held.
#include "fault_points.h"
#include "layer.h"
#include "tables.h"

namespace shmch {

uint32_t Layer::FindGroup(std::string_view name) const { return Groups(*segment_).Find(name); }

uint32_t Layer::FindOrInsertGroup(std::string_view name, bool& inserted) {
  Header& h = segment_->header();
  auto groups = Groups(*segment_);
  uint32_t g = groups.Find(name);
  inserted = g == kNil;
  if (!inserted) return g;
  g = groups.Insert(name, h.group_rover, h.groups_used);
  while (g == kNil && segment_->GrowTable(Segment::Table::kGroups) != kNil) {
    g = Groups(*segment_).Insert(name, h.group_rover, h.groups_used);
  }
  if (g == kNil) {
    throw Error(ErrorCode::kTableFull,
                "no free group record (maxGroups " + std::to_string(segment_->group_limit()) + ")");
  }
  return g;
}

void Layer::RemoveGroupIfEmpty(uint32_t group) {
  if (segment_->group(group).in_use == 1 && segment_->group(group).first_member == kNil) {
    Groups(*segment_).Remove(group, segment_->header().groups_used);
  }
}

uint32_t Layer::FindInMemberHash(uint32_t group, uint32_t channel, uint32_t in_use) const {
  uint32_t m = segment_->member_bucket(HashPair(group, channel) & (segment_->member_buckets() - 1));
  for (uint32_t steps = 0; m != kNil; ++steps) {
    if (steps > segment_->member_records()) segment_->Corrupt("member hash chain loops");
    Member& member = segment_->member(m);
    if (member.in_use == in_use && member.group == group && member.channel == channel) return m;
    m = member.next_in_hash;
  }
  return kNil;
}

uint32_t Layer::FindMember(uint32_t group, uint32_t channel) const {
  return FindInMemberHash(group, channel, 1);
}

uint32_t Layer::FindFan(uint32_t group, uint32_t inbox) const {
  return FindInMemberHash(group, inbox, kFanRecord);
}

uint32_t Layer::TakeMemberRecord() {
  Header& h = segment_->header();
  if (h.members_used < segment_->member_records()) {
    for (uint32_t n = 0; n < segment_->member_records(); ++n) {
      uint32_t i = (h.member_rover + n) % segment_->member_records();
      if (segment_->member(i).in_use == 0) return i;
    }
  }
  return segment_->GrowTable(Segment::Table::kMembers);  // the first record of the new step
}

void Layer::LinkIntoGroupList(uint32_t m, Group& group) {
  Member& member = segment_->member(m);
  member.prev_in_group = kNil;
  member.next_in_group = group.first_member;
  if (group.first_member != kNil) segment_->member(group.first_member).prev_in_group = m;
  group.first_member = m;
}

void Layer::UnlinkFromGroupList(const Member& member, Group& group) {
  if (member.prev_in_group != kNil) {
    segment_->member(member.prev_in_group).next_in_group = member.next_in_group;
  } else {
    group.first_member = member.next_in_group;
  }
  if (member.next_in_group != kNil) {
    segment_->member(member.next_in_group).prev_in_group = member.prev_in_group;
  }
}

void Layer::UnlinkFromMemberHash(uint32_t index) {
  Member& m = segment_->member(index);
  uint32_t* link =
      &segment_->member_bucket(HashPair(m.group, m.channel) & (segment_->member_buckets() - 1));
  for (uint32_t steps = 0; *link != kNil; ++steps) {
    if (steps > segment_->member_records()) segment_->Corrupt("member hash chain loops");
    if (*link == index) {
      *link = m.next_in_hash;
      break;
    }
    link = &segment_->member(*link).next_in_hash;
  }
}

void Layer::LinkFan(uint32_t f, uint32_t g, uint32_t inbox) {
  Header& h = segment_->header();
  h.member_rover = f + 1;
  Member& fan = segment_->member(f);
  fan.group = g;
  fan.channel = inbox;
  fan.expires_at_ms = UINT64_MAX;  // no member yet: nothing to expire
  fan.added_seq = 0;
  fan.fan = kNil;
  fan.next_peer = kNil;
  fan.prev_peer = kNil;
  fan.peer_count = 0;
  fan.live_peers = 0;
  LinkIntoGroupList(f, segment_->group(g));
  uint32_t& bucket = segment_->member_bucket(HashPair(g, inbox) & (segment_->member_buckets() - 1));
  fan.next_in_hash = bucket;
  bucket = f;
  // A fan is derived: recovery drops every fan and rebuilds them from the '!' members.
  __atomic_store_n(&fan.in_use, kFanRecord, __ATOMIC_RELEASE);
  ++h.members_used;
  ++h.fans_used;
  ++segment_->channel(inbox).memberships;  // the fan keeps the inbox record
}

void Layer::RemoveFan(uint32_t f) {
  Header& h = segment_->header();
  Member& fan = segment_->member(f);
  UnlinkFromGroupList(fan, segment_->group(fan.group));
  UnlinkFromMemberHash(f);
  __atomic_store_n(&fan.in_use, 0u, __ATOMIC_RELEASE);
  if (h.members_used) --h.members_used;
  if (h.fans_used) --h.fans_used;
  Channel& inbox = segment_->channel(fan.channel);
  if (inbox.memberships) --inbox.memberships;
  MaybeReleaseChannel(fan.channel);
}

uint32_t Layer::CountLivePeers(uint32_t f, uint64_t now) {
  Member& fan = segment_->member(f);
  uint32_t live = 0;
  uint64_t earliest = UINT64_MAX;
  uint32_t steps = 0;
  for (uint32_t p = fan.next_peer; p != kNil;) {
    if (++steps > segment_->member_records()) segment_->Corrupt("fan member list loops");
    const Member& peer = segment_->member(p);
    const uint64_t expires_at = LoadOnce(peer.expires_at_ms);
    p = LoadOnce(peer.next_peer);
    if (expires_at <= now) continue;
    ++live;
    if (expires_at < earliest) earliest = expires_at;
  }
  fan.live_peers = live;
  fan.expires_at_ms = earliest;
  return live;
}

void Layer::LinkMember(uint32_t m, uint32_t g, uint32_t c, uint64_t expires_at, uint32_t fan) {
  Header& h = segment_->header();
  h.member_rover = m + 1;
  Member& member = segment_->member(m);
  member.group = g;
  member.channel = c;
  member.expires_at_ms = expires_at;
  member.added_seq = h.next_seq;
  member.fan = fan;
  member.prev_peer = kNil;
  member.next_peer = kNil;
  member.peer_count = 0;
  member.prev_in_group = kNil;
  member.next_in_group = kNil;
  Group& gr = segment_->group(g);
  uint32_t& bucket = segment_->member_bucket(HashPair(g, c) & (segment_->member_buckets() - 1));
  member.next_in_hash = bucket;
  __atomic_store_n(&member.in_use, 1u, __ATOMIC_RELEASE);
  FAULT_POINT(4);
  if (fan == kNil) {
    LinkIntoGroupList(m, gr);
  } else {
    // A '!' member joins its fan's list, not the group's: a group send reaches it through the fan.
    Member& f = segment_->member(fan);
    member.next_peer = f.next_peer;
    if (f.next_peer != kNil) segment_->member(f.next_peer).prev_peer = m;
    f.next_peer = m;
    ++f.peer_count;
    if (f.expires_at_ms != 0) {  // else a count is due anyway
      ++f.live_peers;
      if (expires_at < f.expires_at_ms) f.expires_at_ms = expires_at;
    }
  }
  ++gr.member_count;
  bucket = m;
  ++h.members_used;
  ++segment_->channel(c).memberships;
}

void Layer::RemoveMember(uint32_t index) {
  Header& h = segment_->header();
  Member& m = segment_->member(index);
  Group& g = segment_->group(m.group);
  // Unlink from the group's list, or from its fan's.
  const uint32_t fan = m.fan;
  bool fan_emptied = false;
  if (fan == kNil) {
    UnlinkFromGroupList(m, g);
  } else {
    Member& f = segment_->member(fan);
    if (f.in_use != kFanRecord || f.group != m.group) segment_->Corrupt("member names a bad fan");
    if (m.prev_peer != kNil) {
      segment_->member(m.prev_peer).next_peer = m.next_peer;
    } else {
      f.next_peer = m.next_peer;
    }
    if (m.next_peer != kNil) segment_->member(m.next_peer).prev_peer = m.prev_peer;
    if (f.peer_count) --f.peer_count;
    f.expires_at_ms = 0;  // the next group send counts its members again
    fan_emptied = f.next_peer == kNil;
  }
  if (g.member_count) --g.member_count;
  FAULT_POINT(5);
  UnlinkFromMemberHash(index);
  __atomic_store_n(&m.in_use, 0u, __ATOMIC_RELEASE);
  if (h.members_used) --h.members_used;
  Channel& c = segment_->channel(m.channel);
  if (c.memberships) --c.memberships;
  MaybeReleaseChannel(m.channel);
  if (fan_emptied) {
    FAULT_POINT(29);
    RemoveFan(fan);
  }
}

void Layer::DropMembership(uint32_t index) {
  const uint32_t group = segment_->member(index).group;
  RemoveMember(index);
  RemoveGroupIfEmpty(group);
}

}  // namespace shmch
