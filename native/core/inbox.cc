// Inboxes: one queue per instance and prefix ('<prefix>.<client>!', the non-local part of its '!'
// channels, as channels_redis keys them) that holds every message for that instance's '!'
// channels. A direct send is one node naming its channel; a group send is one node per instance
// naming the group, resolved by the owner's receive to its own members of the group. So a group
// send walks instances, not members, the payload is decoded once per instance, and the messages
// of one '!' channel keep their order however they were sent. Called with the segment lock held.
#include <cstring>

#include "fault_points.h"
#include "layer.h"
#include "tables.h"

namespace shmch {

std::string_view Layer::InboxOf(std::string_view name) {
  if (ClientOf(name).empty()) return {};
  return name.substr(0, name.find('!') + 1);
}

uint32_t Layer::DeliveriesOf(const Node& node) const {
  if (LoadOnce(node.target) == kNil) return 1;
  // A count only (statistics), but bounded: a scribbled one cannot inflate them without limit.
  const uint32_t deliveries = LoadOnce(node.deliveries);
  return deliveries == 0 || deliveries > segment_->member_records() ? 1 : deliveries;
}

uint32_t Layer::DropInboxEntries(uint32_t inbox, uint32_t target) {
  Channel& c = segment_->channel(inbox);
  uint32_t dropped = 0;
  uint32_t previous = kNil;
  for (uint32_t steps = 0, n = LoadOnce(c.head); n != kNil; ++steps) {
    if (steps > segment_->node_records()) segment_->Corrupt("queue loops");
    Node& node = segment_->node(n);
    const uint32_t next = LoadOnce(node.next);
    const uint32_t node_target = LoadOnce(node.target);
    // Direct sends to `target`; with kNil, deliveries that no channel can take any more.
    const bool doomed =
        (target != kNil && node_target == target) ||
        (target == kNil && node_target != kNil &&
         ResolveTargets(inbox, node_target, LoadOnce(node.seq), LoadOnce(node.sent_at_ms),
                        nullptr) == 0);
    if (!doomed) {
      previous = n;
      n = next;
      continue;
    }
    dropped += DeliveriesOf(node);
    if (previous == kNil) {
      PopHead(c, n, 27, false);
    } else {
      // Out of the middle of the queue: the one write below publishes it (the chain from the
      // head is primary data); a crash after it leaves the node and its block unreferenced,
      // and recovery frees both and recounts the rest.
      __atomic_store_n(&segment_->node(previous).next, next, __ATOMIC_RELEASE);
      FAULT_POINT(27);
      if (c.tail == n) c.tail = previous;
      if (c.count) --c.count;
      ReleaseBlockRef(LoadOnce(node.block));
      FreeNode(n);
      ReleaseTargetRef(node_target);
    }
    n = next;
  }
  return dropped;
}

uint32_t Layer::ResolveTargets(uint32_t inbox, uint32_t target, uint64_t seq, uint64_t sent_at,
                               ReceivedBatch* out) {
  if (!(target & kGroupTarget)) {
    if (target >= segment_->channel_records() || segment_->channel(target).in_use != 1) return 0;
    // Only a channel of this inbox: a scribbled target naming another record is dropped here,
    // not handed to the receiver under a name it does not own.
    if (target != inbox && !IsOfInbox(target, inbox)) return 0;
    if (out) AddTarget(target, *out);
    return 1;
  }
  const uint32_t group = target & ~kGroupTarget;
  if (group >= segment_->group_records() || segment_->group(group).in_use != 1) return 0;
  const uint32_t fan = FindFan(group, inbox);
  if (fan == kNil) return 0;
  uint32_t found = 0;
  uint32_t m = LoadOnce(segment_->member(fan).next_peer);
  for (uint32_t steps = 0; m != kNil; ++steps) {
    if (steps > segment_->member_records()) segment_->Corrupt("fan member list loops");
    // Copied once: what is checked is what is used, whatever another process writes meanwhile.
    const Member member = segment_->member(m);
    m = member.next_peer;
    // Joined after the send (or a reused group record's member), or expired before it: not for
    // this message. (Housekeeping keeps an expired '!' member for a message lifetime, Maintain.)
    if (member.in_use != 1 || member.group != group || member.fan != fan) continue;
    if (member.added_seq > seq || member.expires_at_ms <= sent_at) continue;
    if (member.channel >= segment_->channel_records() ||
        segment_->channel(member.channel).in_use != 1) {
      continue;
    }
    if (!out) return 1;
    AddTarget(member.channel, *out);
    ++found;
  }
  return found;
}

bool Layer::IsOfInbox(uint32_t channel, uint32_t inbox) const {
  const Channel& c = segment_->channel(channel);
  const Channel& box = segment_->channel(inbox);
  // Lengths read once and checked; the names compared are the checked lengths' bytes.
  const uint32_t length = LoadOnce(c.name_length), box_length = LoadOnce(box.name_length);
  if (length > kMaxNameLength || box_length == 0 || box_length > length) return false;
  if (box.name[box_length - 1] != '!') return false;
  return InboxOf(std::string_view(c.name, length)) == std::string_view(box.name, box_length);
}

void Layer::AddTarget(uint32_t channel, ReceivedBatch& out) {
  auto [it, inserted] = target_name_index_.try_emplace(channel, out.target_name_count);
  if (inserted) {
    const Channel& c = segment_->channel(channel);
    uint32_t length = LoadOnce(c.name_length);
    if (length > kMaxNameLength) length = kMaxNameLength;
    const size_t at = out.target_names.size();
    out.target_names.resize(at + 4 + ((length + 3) & ~3u), 0);
    std::memcpy(out.target_names.data() + at, &length, 4);
    std::memcpy(out.target_names.data() + at + 4, c.name, length);
    ++out.target_name_count;
  }
  out.targets.push_back(it->second);
}

}  // namespace shmch
