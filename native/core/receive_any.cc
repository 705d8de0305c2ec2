// receiveAny: one message from whichever of several channels has one, the oldest first. The
// caller defines a channel set once; the core keeps the heads of the set's channels that hold
// messages in a heap, and is told per call only about the channels that rang since. So a
// receiver of a hundred channels pays for the one or two that are busy, not for a hundred.
#include <algorithm>
#include <cstring>
#include <optional>
#include <unordered_set>

#include "clock.h"
#include "critical.h"
#include "fault_points.h"
#include "layer.h"
#include "tables.h"

namespace shmch {

namespace {

// std::*_heap build max-heaps: ordered by "later", the oldest head is on top.
bool Later(const ChannelSetState::Head& a, const ChannelSetState::Head& b) { return a.seq > b.seq; }

}  // namespace

uint32_t Layer::DefineSet(const std::vector<std::string>& channels) {
  CheckOpen();
  if (channels.empty() || channels.size() > kMaxSetChannels) {
    throw Error(ErrorCode::kInvalidArgument,
                "a channel set holds 1 to " + std::to_string(kMaxSetChannels) + " channels, not " +
                    std::to_string(channels.size()));
  }
  std::unordered_set<std::string_view> seen;
  for (const std::string& name : channels) {
    ValidateName(name, true, "channel");
    // Two cursors on one queue would copy its head twice.
    if (!seen.insert(name).second) {
      throw Error(ErrorCode::kInvalidArgument, "a channel set names channel " + name + " twice");
    }
  }
  uint32_t id = next_set_id_++;
  if (next_set_id_ == 0) next_set_id_ = 1;
  ChannelSetState& set = sets_[id];
  set.names = channels;
  set.record.assign(channels.size(), kNil);
  set.in_heap.assign(channels.size(), 0);
  set.touch.assign(channels.size(), kNil);
  for (uint32_t i = 0; i < channels.size(); ++i) set.position_of_name.emplace(channels[i], i);
  return id;
}

void Layer::ForgetSet(uint32_t id) { sets_.erase(id); }

void Layer::ReceiveAny(uint32_t id, const std::vector<uint32_t>& positions, uint32_t wanted,
                       AnyBatch& out, bool answer_bell) {
  CheckOpen();
  auto found = sets_.find(id);
  if (found == sets_.end())
    throw Error(ErrorCode::kInvalidArgument, "unknown channel set " + std::to_string(id));
  ChannelSetState& set = found->second;
  for (uint32_t position : positions) {
    if (position >= set.names.size()) {
      throw Error(ErrorCode::kInvalidArgument, "channel set position " + std::to_string(position) +
                                                   " out of range (the set has " +
                                                   std::to_string(set.names.size()) + ")");
    }
  }
  if (wanted == 0) return;
  std::vector<PinnedMessage> pins;  // large payloads, copied out after the lock (payload.cc)
  HoldsOnError holds_on_error{*this, &pins};
  std::optional<Critical> guard;
  guard.emplace(*this, LockOp::kReceiveAny);
  const uint64_t now = LockedAtMs();
  const uint64_t my_bit = uint64_t{1} << (slot_ % 64);
  const uint32_t max_nodes = segment_->node_records();

  // The record of a position's channel (kNil: none, so nothing queued). The cached index is used
  // only while that record is still in use under the same name.
  auto record_of = [&](uint32_t position) -> uint32_t {
    const std::string& name = set.names[position];
    uint32_t r = set.record[position];
    if (r != kNil && r < segment_->channel_records()) {
      const Channel& c = segment_->channel(r);
      // name_length is read once and checked against our own (<= kMaxNameLength) name's.
      if (LoadOnce(c.in_use) == 1 && LoadOnce(c.name_length) == name.size() &&
          std::memcmp(c.name, name.data(), name.size()) == 0) {
        return r;
      }
    }
    r = Channels(*segment_).Find(name);
    set.record[position] = r;
    if (r != kNil) set.position_of_record[r] = position;
    return r;
  };

  // What this call does to one channel: its next unexpired node (kNil: none) and how many nodes
  // from the head it passed, all popped in phase 2 (copied ones and expired ones).
  using Touch = ChannelSetState::Touch;
  std::vector<Touch>& touched = set.touched;  // the set's, kept: a call allocates nothing
  touched.clear();
  touched.reserve(positions.size() + wanted);
  struct ResetScratch {
    ChannelSetState& set;
    std::vector<Touch>& touched;
    ~ResetScratch() {
      for (const Touch& k : touched) set.touch[k.position] = kNil;
    }
  } reset{set, touched};
  auto skip_expired = [&](Touch& k) {
    while (k.cursor != kNil) {
      const Node& n = segment_->node(k.cursor);
      if (LoadOnce(n.expires_at_ms) > now) return;
      if (++k.walked > max_nodes) segment_->Corrupt("queue loops");
      k.cursor = LoadOnce(n.next);
    }
  };
  auto touch = [&](uint32_t position) -> uint32_t {
    uint32_t& at = set.touch[position];
    if (at == kNil) {
      Touch k{position, record_of(position), kNil, 0};
      if (k.record != kNil) k.cursor = LoadOnce(segment_->channel(k.record).head);
      skip_expired(k);
      at = static_cast<uint32_t>(touched.size());
      touched.push_back(k);
    }
    return at;
  };
  auto push = [&](const Touch& k) {
    set.heap.push_back({LoadOnce(segment_->node(k.cursor).seq), k.position, k.cursor});
    std::push_heap(set.heap.begin(), set.heap.end(), Later);
    set.in_heap[k.position] = 1;
  };

  // The channels that rang join the heap with their heads.
  auto join = [&](uint32_t position) {
    if (set.in_heap[position]) return;
    const Touch& k = touched[touch(position)];
    if (k.cursor != kNil) push(k);
  };
  for (uint32_t position : positions) join(position);
  if (answer_bell) {
    Slot& me = segment_->slot(slot_);
    // Consumed before the list is read: a ring after this point sets it again.
    me.bell.store(0, std::memory_order_seq_cst);
    const uint32_t count = LoadOnce(me.ready_count);
    out.ready_overflow = LoadOnce(me.ready_overflow) != 0 || count > kReadyEntries;
    for (uint32_t i = 0; i < count && i < kReadyEntries; ++i) {
      const uint32_t index = LoadOnce(me.ready[i]);
      if (index >= segment_->channel_records()) continue;
      auto known = set.position_of_record.find(index);
      if (known != set.position_of_record.end() && record_of(known->second) == index) {
        join(known->second);
        continue;
      }
      const Channel& c = segment_->channel(index);
      const uint32_t length = LoadOnce(c.name_length);
      if (LoadOnce(c.in_use) != 1 || length == 0 || length > kMaxNameLength) continue;
      std::string name(c.name, length);
      // A channel of the set whose record we had not cached yet, or another receive's.
      auto named = set.position_of_name.find(name);
      if (named != set.position_of_name.end() && record_of(named->second) == index) {
        join(named->second);
      } else {
        out.other_ready.push_back(std::move(name));
      }
    }
    me.ready_count = 0;
    me.ready_overflow = 0;
  }

  // Phase 1 copies out, oldest head first; nothing is popped yet, so an error or our death here
  // takes no message with it.
  bool damaged_blocks = false;
  for (uint32_t got = 0; got < wanted && !set.heap.empty();) {
    std::pop_heap(set.heap.begin(), set.heap.end(), Later);
    ChannelSetState::Head top = set.heap.back();
    set.heap.pop_back();
    set.in_heap[top.position] = 0;
    Touch& k = touched[touch(top.position)];
    if (k.cursor == kNil) continue;  // emptied by another receiver
    // Every field used below is read once into a local and checked there: another process may
    // rewrite the node or the block header while we look.
    const Node& shared_node = segment_->node(k.cursor);
    if (k.cursor != top.node || LoadOnce(shared_node.seq) != top.seq) {
      push(k);  // stale (another receiver took that head): back in with the real one
      continue;
    }
    const uint32_t node_index = k.cursor;
    const uint32_t block = LoadOnce(shared_node.block);
    const uint32_t next = LoadOnce(shared_node.next);
    out.position_of.push_back(k.position);
    if (!LeaveForLater(block, node_index, out.bytes, out.length_of, pins) &&
        !CopyOut(block, out.bytes, out.length_of)) {
      damaged_blocks = true;
    }
    ++got;
    if (++k.walked > max_nodes) segment_->Corrupt("queue loops");
    k.cursor = next;
    skip_expired(k);
    if (k.cursor != kNil) push(k);
  }
  // Waits: registered where a channel is empty, withdrawn where it holds messages (the heap
  // brings us back to it without a ring).
  for (Touch& k : touched) {
    if (k.cursor == kNil) {
      if (k.record == kNil)
        k.record = set.record[k.position] = EnsureChannel(set.names[k.position]);
      segment_->channel(k.record).waiters[slot_ / 64] |= my_bit;
    } else {
      segment_->channel(k.record).waiters[slot_ / 64] &= ~my_bit;
      out.still_ready.push_back(k.position);
    }
  }
  FAULT_POINT(21);
  // Phase 2 commits: pops what phase 1 passed, copied and expired alike.
  for (const Touch& k : touched) {
    if (k.record != kNil) CommitWalk(k.record, k.walked, now, &pins);
  }
  out.held = static_cast<uint32_t>(set.heap.size());
  FAULT_POINT(25);
  CountDamaged(out.length_of, damaged_blocks);
  guard.reset();  // the pinned payloads are copied with no lock held
  holds_on_error.pins = nullptr;
  if (!pins.empty()) FinishPinned(pins, out.bytes, out.placed, out.length_of, LockOp::kReceiveAny);
}

}  // namespace shmch
