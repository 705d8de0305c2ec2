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

uint32_t Layer::FindMember(uint32_t group, uint32_t channel) const {
  uint32_t m = segment_->member_bucket(HashPair(group, channel) & (segment_->member_buckets() - 1));
  for (uint32_t steps = 0; m != kNil; ++steps) {
    if (steps > segment_->member_records()) segment_->Corrupt("member hash chain loops");
    Member& member = segment_->member(m);
    if (member.in_use == 1 && member.group == group && member.channel == channel) return m;
    m = member.next_in_hash;
  }
  return kNil;
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

void Layer::LinkMember(uint32_t m, uint32_t g, uint32_t c, uint64_t expires_at) {
  Header& h = segment_->header();
  h.member_rover = m + 1;
  Member& member = segment_->member(m);
  member.group = g;
  member.channel = c;
  member.expires_at_ms = expires_at;
  Group& gr = segment_->group(g);
  member.prev_in_group = kNil;
  member.next_in_group = gr.first_member;
  uint32_t& bucket = segment_->member_bucket(HashPair(g, c) & (segment_->member_buckets() - 1));
  member.next_in_hash = bucket;
  __atomic_store_n(&member.in_use, 1u, __ATOMIC_RELEASE);
  FAULT_POINT(4);
  if (gr.first_member != kNil) segment_->member(gr.first_member).prev_in_group = m;
  gr.first_member = m;
  ++gr.member_count;
  bucket = m;
  ++h.members_used;
  ++segment_->channel(c).memberships;
}

void Layer::RemoveMember(uint32_t index) {
  Header& h = segment_->header();
  Member& m = segment_->member(index);
  Group& g = segment_->group(m.group);
  // Unlink from the group's list.
  if (m.prev_in_group != kNil) {
    segment_->member(m.prev_in_group).next_in_group = m.next_in_group;
  } else {
    g.first_member = m.next_in_group;
  }
  if (m.next_in_group != kNil) segment_->member(m.next_in_group).prev_in_group = m.prev_in_group;
  if (g.member_count) --g.member_count;
  FAULT_POINT(5);
  // Unlink from the hash chain.
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
  __atomic_store_n(&m.in_use, 0u, __ATOMIC_RELEASE);
  if (h.members_used) --h.members_used;
  Channel& c = segment_->channel(m.channel);
  if (c.memberships) --c.memberships;
  MaybeReleaseChannel(m.channel);
}

void Layer::DropMembership(uint32_t index) {
  const uint32_t group = segment_->member(index).group;
  RemoveMember(index);
  RemoveGroupIfEmpty(group);
}

}  // namespace shmch
