// Channel records and their queues: making and releasing records, capacity, message blocks in
// the arena, nodes, and putting messages on and taking them off a queue. Called with the segment
// lock held.
#include <fnmatch.h>

#include "checksum.h"
#include "clock.h"
#include "fault_points.h"
#include "layer.h"
#include "tables.h"

namespace shmch {

namespace {

constexpr uint32_t kCapacityBits = 24;
constexpr uint32_t kCapacityMask = (1u << kCapacityBits) - 1;

// The check byte covers the options and the value: a scribbled word, or a record made by a
// process with other options, fails it (but for 1 in 256) and is recomputed, never trusted.
uint32_t CapacityCheck(uint32_t options_tag, uint32_t capacity) {
  return ((options_tag ^ capacity) * 0x9e3779b1u) >> kCapacityBits;
}

// 0 (never valid: capacity 0 is not cached) when the capacity does not fit 24 bits.
uint32_t CachedCapacityWord(uint32_t options_tag, uint32_t capacity) {
  if (capacity == 0 || capacity > kCapacityMask) return 0;
  return capacity | (CapacityCheck(options_tag, capacity) << kCapacityBits);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Channel records
// ---------------------------------------------------------------------------------------------

uint32_t Layer::CapacityOf(std::string_view channel) const {
  if (options_.channel_capacity.empty()) return options_.capacity;
  std::string name(channel);
  for (const auto& [pattern, capacity] : options_.channel_capacity) {
    if (fnmatch(pattern.c_str(), name.c_str(), 0) == 0) return capacity;
  }
  return options_.capacity;
}

uint32_t Layer::CapacityOf(const Channel& record, std::string_view name) const {
  uint32_t word = LoadOnce(record.cached_capacity);
  uint32_t capacity = word & kCapacityMask;
  if (capacity != 0 && (word >> kCapacityBits) == CapacityCheck(capacity_tag_, capacity)) {
    return capacity;
  }
  return CapacityOf(name);
}

uint32_t Layer::EnsureChannel(std::string_view name) {
  uint32_t index = Channels(*segment_).Find(name);
  return index != kNil ? index : MakeChannel(name);
}

uint32_t Layer::MakeChannel(std::string_view name) {
  auto table = Channels(*segment_);
  Header& h = segment_->header();
  // Matched once, when the record is made: later sends and groupSends read it from the record.
  const uint32_t capacity = CapacityOf(name);
  auto init = [&](Channel& c) { c.cached_capacity = CachedCapacityWord(capacity_tag_, capacity); };
  uint32_t index = table.Insert(name, h.channel_rover, h.channels_used, init);
  // Every existing record is taken: the table grows by a step, reserved in /dev/shm first.
  while (index == kNil && segment_->GrowTable(Segment::Table::kChannels) != kNil) {
    index = Channels(*segment_).Insert(name, h.channel_rover, h.channels_used, init);
  }
  if (index == kNil) {
    throw Error(ErrorCode::kTableFull, "no free channel record (maxChannels " +
                                           std::to_string(segment_->channel_limit()) + ")");
  }
  return index;
}

void Layer::MaybeReleaseChannel(uint32_t index) {
  Channel& c = segment_->channel(index);
  if (c.in_use == 1 && c.head == kNil && c.memberships == 0 && c.inbox_refs == 0 &&
      !HasWaiters(c)) {
    Channels(*segment_).Remove(index, segment_->header().channels_used);
  }
}

uint32_t Layer::DropChannel(uint32_t index) {
  Header& h = segment_->header();
  uint32_t dropped = 0;
  Channel& c = segment_->channel(index);
  if (c.memberships) {
    for (uint32_t m = 0; m < segment_->member_records() && c.memberships; ++m) {
      Member& member = segment_->member(m);
      if (member.in_use != 1 || member.channel != index) continue;
      DropMembership(m);
    }
  }
  for (uint32_t steps = 0;; ++steps) {
    const uint32_t head = LoadOnce(c.head);
    if (head == kNil) break;
    if (steps > segment_->node_records()) segment_->Corrupt("queue loops");
    dropped += DeliveriesOf(segment_->node(head));
    PopHead(c, head, 16, false);
  }
  c.tail = kNil;
  c.count = 0;
  for (uint64_t& w : c.waiters) w = 0;
  if (c.in_use == 1) Channels(*segment_).Remove(index, h.channels_used);
  return dropped;
}

void Layer::DropAllExpired(uint64_t now) {
  for (uint32_t c = 0; c < segment_->channel_records(); ++c) {
    Channel& ch = segment_->channel(c);
    if (ch.in_use != 1 || ch.head == kNil) continue;
    DropHeadExpired(ch, now);
    MaybeReleaseChannel(c);
  }
}

// ---------------------------------------------------------------------------------------------
// Message blocks and nodes
// ---------------------------------------------------------------------------------------------

void Layer::CheckMessageSize(uint32_t length) const {
  if (length > segment_->max_message_size()) {
    throw Error(ErrorCode::kTooLarge, "message of " + std::to_string(length) +
                                          " bytes exceeds maxMessageSize " +
                                          std::to_string(segment_->max_message_size()));
  }
}

uint32_t Layer::AllocateBlock(uint32_t length) {
  uint32_t block = arena_->Allocate(length);
  if (block == kNil) {
    throw Error(ErrorCode::kArenaFull,
                "the segment's message arena has no room for " + std::to_string(length) +
                    " bytes (" +
                    std::to_string(uint64_t{segment_->header().used_pages} * kPageSize) + " of " +
                    std::to_string(uint64_t{segment_->page_count()} * kPageSize) +
                    " bytes in use): receive what is queued, or create the layer with a larger "
                    "`size`");
  }
  return block;
}

// Copies (and checksums) the payload under the lock: small payloads, and group sends (a large
// one to a group still copies under the lock; payload.cc takes sends to one channel out of it).
uint32_t Layer::StoreBlock(const uint8_t* data, uint32_t length) {
  const PayloadPiece whole{data, length};
  return StorePieces(&whole, 1, length);
}

uint32_t Layer::StorePieces(const PayloadPiece* pieces, uint32_t count, uint32_t length) {
  uint32_t block = AllocateBlock(length);
  segment_->block(block).checksum = CopyPieces(arena_->Payload(block), pieces, count);
  return block;
}

void Layer::ReleaseUnqueuedBlock(uint32_t block) {
  // A block that no queue references yet (its first Enqueue failed) would leak.
  if (block != kNil && segment_->CheckedBlock(block).refcount == 0) arena_->Free(block);
}

void Layer::ReleaseBlockRef(uint32_t block) {
  uint32_t refcount = segment_->CheckedBlock(block).refcount;
  if (refcount > 1) {
    segment_->block(block).refcount = refcount - 1;
  } else {
    arena_->Free(block);
  }
}

uint32_t Layer::AllocateNode() {
  Header& h = segment_->header();
  if (h.free_node == kNil) {
    uint32_t first = segment_->GrowTable(Segment::Table::kNodes);
    if (first == kNil) return kNil;
    // The new nodes join the free list (derived: recovery rebuilds it from node_records).
    for (uint32_t n = segment_->node_records(); n-- > first;) FreeNode(n);
  }
  uint32_t index = h.free_node;
  if (index == kNil) return kNil;
  Node& n = segment_->node(index);
  h.free_node = n.next;
  --h.free_nodes;
  return index;
}

void Layer::FreeNode(uint32_t index) {
  Header& h = segment_->header();
  Node& n = segment_->node(index);
  n.block = kNil;
  n.next = h.free_node;
  h.free_node = index;
  ++h.free_nodes;
}

// ---------------------------------------------------------------------------------------------
// Putting messages on a queue and taking them off
// ---------------------------------------------------------------------------------------------

SendTarget Layer::FindSendTarget(std::string_view channel) {
  auto table = Channels(*segment_);
  // A named channel (the hot path of most sends) is told by its lack of '!' alone.
  std::string_view inbox =
      channel.find('!') == std::string_view::npos ? std::string_view() : InboxOf(channel);
  if (inbox.empty()) {
    uint32_t index = table.Find(channel);
    return {index != kNil ? index : MakeChannel(channel), kNil};
  }
  // A '!' channel of an instance: its message goes to that instance's inbox. Without an inbox
  // record, the instance may be gone: then nobody could ever receive it (an existing inbox of a
  // gone instance is reclaimed, messages and all, by the next housekeeping).
  uint32_t queue = table.Find(inbox);
  if (queue == kNil && !IsClientAttached(ClientOf(channel))) {
    ++segment_->header().messages_orphaned;
    return {};
  }
  // The channel's own record is the node's target (it names the channel to the receiver and
  // holds the capacity its name matched).
  uint32_t target = table.Find(channel);
  if (target == kNil) target = MakeChannel(channel);
  if (queue == kNil) {
    try {
      queue = EnsureChannel(inbox);  // the target's record, if the two names are one
    } catch (...) {
      MaybeReleaseChannel(target);
      throw;
    }
  }
  return {queue, target};
}

void Layer::MaybeReleaseTarget(const SendTarget& to) {
  MaybeReleaseChannel(to.queue);
  if (to.target != kNil) MaybeReleaseChannel(to.target);
}

bool Layer::IsFull(const SendTarget& to, std::string_view channel, uint64_t now,
                   uint32_t& capacity) {
  Channel& c = segment_->channel(to.queue);
  // A '!' channel's capacity is its own name's (channels_redis get_capacity(channel)), counted
  // against its instance's inbox (the `prefix!` key).
  capacity = CapacityOf(to.target != kNil ? segment_->channel(to.target) : c, channel);
  DropHeadExpired(c, now);
  if (c.count < capacity) return false;
  NoteFull(channel, to.queue, capacity);
  MaybeReleaseTarget(to);
  ++segment_->header().sends_refused_full;
  return true;
}

void Layer::NoteFull(std::string_view channel, uint32_t queue, uint32_t capacity) {
  const Channel& c = segment_->channel(queue);
  last_full_.channel.assign(channel);
  last_full_.queue = queue;
  last_full_.head = c.head;
  last_full_.head_seq = c.head < segment_->node_records() ? segment_->node(c.head).seq : 0;
  last_full_.capacity = capacity;
}

bool Layer::StillFull(std::string_view channel) const {
  const FullQueue& last = last_full_;
  if (last.queue == kNil || last.channel != channel) return false;
  if (last.queue >= segment_->channel_records()) return false;
  const Channel& c = segment_->channel(last.queue);
  // Head first (acquire, as a receiver publishes it): what follows is read no earlier.
  const uint32_t head = __atomic_load_n(&c.head, __ATOMIC_ACQUIRE);
  if (LoadOnce(c.in_use) != 1 || head != last.head || head >= segment_->node_records()) return false;
  const Node& node = segment_->node(head);
  // A popped head's node may be reused at once, by another queue: its seq tells them apart.
  if (LoadOnce(node.seq) != last.head_seq) return false;
  // An expired head is dropped by the next look under the lock, which may make room.
  if (LoadOnce(node.expires_at_ms) <= MonotonicMs()) return false;
  return LoadOnce(c.count) >= last.capacity;
}

bool Layer::SendLocked(const SendTarget& to, const PayloadPiece* pieces, uint32_t count,
                       uint32_t length, uint64_t now) {
  uint32_t block = kNil;
  try {
    block = StorePieces(pieces, count, length);
    Enqueue(to.queue, block, now + options_.expiry_ms, to.target);
  } catch (...) {
    ReleaseUnqueuedBlock(block);
    MaybeReleaseTarget(to);
    throw;
  }
  ++segment_->header().messages_sent;
  return true;
}

void Layer::Enqueue(uint32_t channel_index, uint32_t block, uint64_t expires_at, uint32_t target,
                    uint32_t deliveries) {
  Channel& c = segment_->channel(channel_index);
  uint32_t index = AllocateNode();
  if (index == kNil) {
    throw Error(ErrorCode::kArenaFull, "the segment's node pool is exhausted (maxNodes " +
                                           std::to_string(segment_->node_limit()) + ")");
  }
  Node& n = segment_->node(index);
  n.block = block;
  n.expires_at_ms = expires_at;
  n.seq = segment_->header().next_seq++;
  n.next = kNil;
  n.target = target;
  n.deliveries = deliveries;
  // Every caller gives now + expiry_ms (no second clock read on the send path).
  n.sent_at_ms = expires_at > options_.expiry_ms ? expires_at - options_.expiry_ms : 0;
  segment_->block(block).refcount += 1;
  // Derived, counted before the node is linked: a crash in between leaves a count one too high,
  // which recovery recomputes (a count too low could free a record a queued node names).
  if (target != kNil && !(target & kGroupTarget)) segment_->channel(target).inbox_refs += 1;
  FAULT_POINT(1);
  // Publish: the node is complete before anything links to it.
  if (c.tail == kNil) {
    __atomic_store_n(&c.head, index, __ATOMIC_RELEASE);
  } else {
    __atomic_store_n(&segment_->node(c.tail).next, index, __ATOMIC_RELEASE);
  }
  FAULT_POINT(2);
  c.tail = index;
  ++c.count;
  WakeWaiters(c, channel_index);
}

uint64_t Layer::PopHead(Channel& c, uint32_t head, int fault_point, bool skip_invalid_block,
                        uint32_t hold_entry) {
  // Every field used is read once: another process may rewrite the node while we look.
  Node& n = segment_->node(head);
  const uint64_t expires_at = LoadOnce(n.expires_at_ms);
  const uint32_t block = LoadOnce(n.block);
  const uint32_t next = LoadOnce(n.next);
  const uint32_t target = LoadOnce(n.target);
  c.head = next;
  // A crash here leaves the node and block unreferenced: recovery frees both.
  if (fault_point != 0) FAULT_POINT(fault_point);
  if (next == kNil) c.tail = kNil;
  if (c.count) --c.count;
  if (hold_entry < kHeldBlocks) {
    // The node's reference becomes our slot's hold: the block stays ours until copied out.
    segment_->slot(slot_).held[hold_entry] = block + 1;
  } else if (!skip_invalid_block || segment_->IsValidBlock(block)) {
    ReleaseBlockRef(block);
  }
  FreeNode(head);
  ReleaseTargetRef(target);
  return expires_at;
}

void Layer::PrefetchHead(uint32_t index, bool payload) const {
  if (index >= segment_->channel_records()) return;
  const uint32_t head = LoadOnce(segment_->channel(index).head);
  if (head >= segment_->node_records()) return;
  const Node& node = segment_->node(head);
  if (!payload) {
    __builtin_prefetch(&node);
    return;
  }
  const uint32_t block = LoadOnce(node.block);
  if (block >= segment_->page_count()) return;
  const uint8_t* start = segment_->page(block);
  __builtin_prefetch(start);
  __builtin_prefetch(start + 64);
  __builtin_prefetch(start + 128);
}

void Layer::PrefetchNextSend() const {
  const Header& h = segment_->header();
  const uint32_t node = LoadOnce(h.free_node);
  if (node < segment_->node_records()) __builtin_prefetch(&segment_->node(node), 1);
  const uint32_t page = LoadOnce(h.page_rover);
  if (page < segment_->page_count()) {
    const uint8_t* start = segment_->page(page);
    __builtin_prefetch(start, 1);
    __builtin_prefetch(start + 64, 1);
    __builtin_prefetch(start + 128, 1);
  }
}

void Layer::ReleaseTargetRef(uint32_t target) {
  if (target == kNil || (target & kGroupTarget) || target >= segment_->channel_records()) return;
  Channel& t = segment_->channel(target);
  if (t.in_use != 1) return;
  if (t.inbox_refs) --t.inbox_refs;
  MaybeReleaseChannel(target);
}

void Layer::DropHeadExpired(Channel& c, uint64_t now) {
  Header& h = segment_->header();
  for (uint32_t steps = 0;; ++steps) {
    const uint32_t head = LoadOnce(c.head);
    if (head == kNil) break;
    if (steps > segment_->node_records()) segment_->Corrupt("queue loops");
    const Node& node = segment_->node(head);
    if (LoadOnce(node.expires_at_ms) > now) break;
    h.messages_expired += DeliveriesOf(node);
    PopHead(c, head, 7, false);
  }
}

bool Layer::CopyOut(uint32_t block, PayloadBytes& bytes, std::vector<uint32_t>& length_of) {
  BlockInfo info = segment_->ReadBlock(block);
  if (!info.message) {
    length_of.push_back(kDamagedMessage);
    return false;
  }
  size_t at = bytes.size();
  uint8_t* into = AppendRoom(bytes, info.length);
  // Checked as it is copied: what we hand out is exactly what was checked, even if a hostile
  // writer changes the arena under us.
  if (CopyWithCrc32c(into, arena_->Payload(block), info.length) != info.checksum) {
    bytes.resize(at);
    length_of.push_back(kDamagedMessage);
  } else {
    length_of.push_back(info.length);
  }
  return true;
}

void Layer::CommitWalk(uint32_t index, uint32_t walked, uint64_t now, std::vector<PinnedMessage>* pins) {
  Header& h = segment_->header();
  Channel& c = segment_->channel(index);
  for (uint32_t i = 0; i < walked; ++i) {
    const uint32_t head = LoadOnce(c.head);
    if (head == kNil) break;
    // A message phase 1 left to copy after the lock: its node and block are the ones it read.
    PinnedMessage* pin = nullptr;
    if (pins) {
      const uint32_t block = LoadOnce(segment_->node(head).block);
      for (PinnedMessage& p : *pins) pin = p.node == head && p.block == block && !p.held ? &p : pin;
    }
    if (pin) pin->held = true;
    // Per delivery: an inbox node for a group counts each member channel it was sent for (a
    // receive that resolves fewer moves the rest to orphaned, Receive).
    const uint32_t deliveries = DeliveriesOf(segment_->node(head));
    // A block the copy-out found damaged was counted there; recovery follows and frees it.
    if (PopHead(c, head, 0, true, pin ? pin->entry : kNil) <= now) {
      h.messages_expired += deliveries;
    } else {
      h.messages_received += deliveries;
    }
  }
  // We leave messages behind (we wanted fewer, or were woken for them): wake another waiter.
  PassWakeupOn(c, index, slot_);
  MaybeReleaseChannel(index);
}

void Layer::CountDamaged(const std::vector<uint32_t>& length_of, bool damaged_blocks) {
  Header& h = segment_->header();
  for (uint32_t length : length_of) {
    if (length == kDamagedMessage) ++h.messages_damaged;
  }
  // A damaged block header leaves its pages unaccounted for: rebuild the page map.
  if (damaged_blocks) Recover();
}

}  // namespace shmch
