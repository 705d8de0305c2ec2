#include "layer.h"

#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <unordered_set>

#include "checksum.h"
#include "clock.h"
#include "critical.h"
#include "fault_points.h"
#include "shared_lock.h"
#include "tables.h"

namespace shmch {

namespace {

bool HasWaiters(const Channel& c) {
  for (uint64_t w : c.waiters)
    if (w) return true;
  return false;
}

}  // namespace

void Layer::ValidateName(std::string_view name, bool allow_bang, const char* what) {
  if (name.empty() || name.size() > kMaxNameLength) {
    throw Error(ErrorCode::kInvalidArgument, std::string(what) + " name must be 1 to " +
                                                 std::to_string(kMaxNameLength) + " characters");
  }
  int bangs = 0;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (c == '!' && allow_bang && ++bangs == 1) ok = true;
    if (!ok) {
      throw Error(ErrorCode::kInvalidArgument,
                  std::string(what) + " name contains an invalid character: " + std::string(name));
    }
  }
}

namespace {

// Tags the capacity options, so a record's cached capacity is used only by processes that would
// compute the same one. Never 0 (0 marks "not known").
uint32_t CapacityTag(const LayerOptions& o) {
  std::string key = std::to_string(o.capacity);
  for (const auto& [pattern, capacity] : o.channel_capacity) {
    key += '\0' + pattern + '\0' + std::to_string(capacity);
  }
  uint32_t tag = HashName(key);
  return tag ? tag : 1;
}

}  // namespace

Layer::Layer(const LayerOptions& options) : options_(options), capacity_tag_(CapacityTag(options)) {
  segment_ = std::make_unique<Segment>(options_.segment);  // cleans up after itself on failure
  arena_ = std::make_unique<Arena>(*segment_);
  doorbells_ = std::make_unique<Doorbells>(options_.segment.name, options_.segment.mode,
                                           options_.segment.allow_foreign);
  try {
    ClaimSlot();
    doorbells_->OpenOwn(slot_);
  } catch (const Error& e) {
    AbandonFailedOpen();
    if (e.code() != ErrorCode::kNoSpace) throw;
    char size[64];
    std::snprintf(size, sizeof size, " (size %.1f MiB)",
                  static_cast<double>(options_.segment.size) / (1 << 20));
    throw Error(ErrorCode::kNoSpace, "cannot open layer '" + options_.segment.name + "'" + size + ": " +
                                         e.what() + "; " + segment_->SpaceReport() + ". " +
                                         Segment::SpaceAdvice());
  } catch (...) {
    AbandonFailedOpen();
    throw;
  }
}

void Layer::AbandonFailedOpen() noexcept {
  // A failed open leaves nothing behind: a segment this open created goes, unless another
  // process attached to it meanwhile.
  bool alone = false;
  const uint32_t claimed_slot = slot_;
  try {
    if (slot_ != kNil) {
      Critical guard(*this);
      alone = !AnyOtherSlotAlive();
    } else {
      alone = !AnyOtherSlotAlive();  // no slot of ours: look at the others' liveness locks only
    }
  } catch (...) {
  }
  try {
    Close();
  } catch (...) {
  }
  // Only what this open made: doorbells it did not create (another instance's, or one planted by
  // someone else) are not ours to remove.
  if (alone && segment_->created() && !segment_->IsUnlinked()) {
    try {
      Segment::Unlink(options_.segment.name);
    } catch (...) {
    }
    // Our slot's doorbell, if this open got as far as making it (a FIFO of ours; a file someone
    // planted there is left alone).
    if (claimed_slot != kNil) {
      std::string fifo = Doorbells::FifoPath(options_.segment.name, claimed_slot);
      struct stat st;
      if (lstat(fifo.c_str(), &st) == 0 && S_ISFIFO(st.st_mode) && st.st_uid == geteuid()) {
        unlink(fifo.c_str());
      }
    }
  }
}

bool Layer::AnyOtherSlotAlive() const {
  for (uint32_t i = 0; i < kMaxSlots; ++i) {
    if (i != slot_ && segment_->slot(i).state.load(std::memory_order_acquire) != 0 && IsSlotAlive(i)) {
      return true;
    }
  }
  return false;
}

void Layer::DropAllExpired(uint64_t now) {
  for (uint32_t c = 0; c < segment_->channel_records(); ++c) {
    Channel& ch = segment_->channel(c);
    if (ch.in_use != 1 || ch.head == kNil) continue;
    DropHeadExpired(ch, now);
    MaybeReleaseChannel(c);
  }
}

bool Layer::PruneIfUnused() {
  CheckOpen();
  bool unused = false;
  {
    Critical guard(*this);
    ReclaimDeadSlots();
    DropAllExpired(MonotonicMs());
    Header& h = segment_->header();
    unused = !AnyOtherSlotAlive() && h.free_nodes == segment_->node_records();
    if (!unused) arena_->Trim();
  }
  if (!unused) return false;
  Close();
  if (!segment_->IsUnlinked()) Destroy(options_.segment.name);
  return true;
}

Layer::~Layer() {
  try {
    Close();
  } catch (...) {
  }
}

bool Layer::Destroy(const std::string& layer_name) {
  Doorbells::UnlinkAll(layer_name);
  return Segment::Unlink(layer_name);
}

void Layer::CheckOpen() const {
  if (closed_) throw Error(ErrorCode::kClosed, "the layer is closed");
}

bool Layer::IsSlotAlive(uint32_t index) const {
  if (index == slot_) return true;  // our own OFD lock is invisible to our own F_OFD_GETLK
  if (index >= kMaxSlots) return false;
  return segment_->IsSlotHeld(index);
}

void Layer::LockSegment(LockOp op) {
  Header& h = segment_->header();
  LockResult r = SharedLockOps::Lock(h.lock, lock_word_, [this](uint32_t s) { return IsSlotAlive(s); },
                                     options_.lock_wait_ns);
  if (r == LockResult::kBusy) {
    uint32_t holder = LockHolderSlot(h.lock.word.load(std::memory_order_relaxed));
    int pid = holder < kMaxSlots ? segment_->slot(holder).pid : 0;
    throw Error(ErrorCode::kBusy,
                "the segment lock is held by another live process (pid " + std::to_string(pid) +
                    ", slot " + std::to_string(holder) + ")",
                pid);
  }
  // Nothing may throw between acquiring and handing the lock to the guard without releasing it:
  // a live holder that keeps the lock after a failure blocks every process (only its own next call
  // would take it back).
  locked_at_ns_ = MonotonicNs();
  lock_op_ = op;
  try {
    ReachedTestStep(kLockStepHeld);
    FAULT_POINT(15);
    segment_->SyncRecords();  // records other processes added since we last held the lock
    if (r == LockResult::kOwnerDied || h.lock.recovery_pending.load(std::memory_order_acquire)) {
      // Marked first: if this recovery fails or dies, the next holder does it again.
      lock_op_ = LockOp::kRecover;  // its cost is the recovery's, not the operation's
      h.lock.recovery_pending.store(1, std::memory_order_relaxed);
      Recover();
      h.lock.recovery_pending.store(0, std::memory_order_release);
    }
  } catch (...) {
    UnlockSegment();
    RingPending();
    throw;
  }
}

void Layer::UnlockSegment() {
  lock_hold_[lock_op_].Record(MonotonicNs() - locked_at_ns_);
  // False only for a forged lock word (the protocol never lets two holders in): then the word is
  // left to whoever it names rather than freed under them.
  SharedLockOps::Unlock(segment_->header().lock, lock_word_);
}

void Layer::ClaimSlot() {
  // The OFD byte lock decides ownership atomically, before the segment lock (which needs a slot).
  for (uint32_t i = 0; i < kMaxSlots; ++i) {
    Slot& s = segment_->slot(i);
    if (s.state.load(std::memory_order_acquire) != 0 && segment_->IsSlotHeld(i)) continue;
    if (!segment_->TryLockSlotByte(i)) continue;
    slot_ = i;
    // A new incarnation before the first lock: the lock word of a dead earlier owner of this slot
    // then differs from ours (shared_lock.h). Only the OFD lock's holder writes the generation.
    s.generation += 1;
    generation_ = s.generation;
    lock_word_ = LockWordOf(slot_, generation_);
    s.pid = getpid();  // before the first lock too: a holder stuck in there can be named
    try {
      Critical guard(*this);
      if (s.state.load(std::memory_order_acquire) != 0) ReclaimSlotLocked(i);
      s.client_length = static_cast<uint32_t>(
          options_.client_id.size() < kMaxClientLength ? options_.client_id.size() : 0);
      std::memcpy(s.client, options_.client_id.data(), s.client_length);
      s.attached_at_ms = MonotonicMs();
      s.bell.store(0);
      s.sleeping.store(0);
      s.ready_count = 0;
      s.ready_overflow = 0;
      s.state.store(1, std::memory_order_release);
      ReclaimDeadSlots();
    } catch (...) {
      segment_->UnlockSlotByte(i);
      slot_ = kNil;
      throw;
    }
    return;
  }
  throw Error(ErrorCode::kTableFull, "all " + std::to_string(kMaxSlots) +
                                         " process slots of the segment are in use");
}

void Layer::ReclaimDeadSlots() {
  for (uint32_t i = 0; i < kMaxSlots; ++i) {
    if (i == slot_) continue;
    Slot& s = segment_->slot(i);
    if (s.state.load(std::memory_order_acquire) != 0 && !segment_->IsSlotHeld(i)) {
      ReclaimSlotLocked(i);
    }
  }
}

// The client part of '<prefix>.<client>!<random>', or empty for other names.
static std::string_view ClientOf(std::string_view name) {
  size_t bang = name.find('!');
  if (bang == std::string_view::npos) return {};
  size_t dot = name.rfind('.', bang);
  if (dot == std::string_view::npos) return {};
  return name.substr(dot + 1, bang - dot - 1);
}

void Layer::ReclaimSlotLocked(uint32_t index) {
  // Nobody can receive from a gone instance's '!' channels any more, and its receivers no longer
  // wait anywhere.
  Slot& slot = segment_->slot(index);
  uint32_t client_length = LoadOnce(slot.client_length);
  if (client_length > kMaxClientLength) client_length = 0;
  std::string_view client(slot.client, client_length);
  uint64_t mask = ~(uint64_t{1} << (index % 64));
  // Its '!' channels are collected first and their memberships removed in one pass over the
  // member table: one scan per channel made reclaiming a process with 16k inboxes take 0.4-1.6 s
  // under the lock.
  std::vector<uint32_t> doomed;
  bool doomed_in_groups = false;
  for (uint32_t c = 0; c < segment_->channel_records(); ++c) {
    Channel& ch = segment_->channel(c);
    if (ch.in_use != 1) continue;
    bool was_waiting = (ch.waiters[index / 64] & ~mask) != 0;
    ch.waiters[index / 64] &= mask;
    uint32_t name_length = LoadOnce(ch.name_length);
    std::string_view name(ch.name, name_length <= kMaxNameLength ? name_length : 0);
    if (!client.empty() && ClientOf(name) == client) {
      doomed.push_back(c);
      doomed_in_groups = doomed_in_groups || ch.memberships != 0;
    } else {
      // It may have been handed this channel's wake-up and never taken the message: pass it on.
      if (was_waiting && ch.head != kNil && HasWaiters(ch)) WakeWaiters(ch, c, false, index);
      MaybeReleaseChannel(c);
    }
  }
  if (doomed_in_groups) {
    std::vector<uint8_t> is_doomed(segment_->channel_records(), 0);
    for (uint32_t c : doomed) is_doomed[c] = 1;
    Header& h = segment_->header();
    for (uint32_t m = 0; m < segment_->member_records(); ++m) {
      Member& member = segment_->member(m);
      uint32_t channel = LoadOnce(member.channel);
      if (member.in_use != 1 || channel >= is_doomed.size() || !is_doomed[channel]) continue;
      uint32_t group = member.group;
      RemoveMember(m);
      if (segment_->group(group).in_use == 1 && segment_->group(group).first_member == kNil) {
        Groups(*segment_).Remove(group, h.groups_used);
      }
    }
  }
  FAULT_POINT(17);
  // Their memberships are gone (a count a scribbler raised makes DropChannel scan for the rest).
  for (uint32_t c : doomed) segment_->header().messages_orphaned += DropChannel(c);
  slot.client_length = 0;
  slot.ready_count = 0;
  slot.ready_overflow = 0;
  slot.state.store(0, std::memory_order_release);
}

bool Layer::IsClientAttached(std::string_view client) const {
  for (uint32_t i = 0; i < kMaxSlots; ++i) {
    const Slot& s = segment_->slot(i);
    if (s.state.load(std::memory_order_acquire) == 0) continue;
    uint32_t length = s.client_length <= kMaxClientLength ? s.client_length : 0;
    if (std::string_view(s.client, length) == client && IsSlotAlive(i)) return true;
  }
  return false;
}

uint32_t Layer::DropChannel(uint32_t index) {
  Header& h = segment_->header();
  uint32_t dropped = 0;
  Channel& c = segment_->channel(index);
  if (c.memberships) {
    for (uint32_t m = 0; m < segment_->member_records() && c.memberships; ++m) {
      Member& member = segment_->member(m);
      if (member.in_use != 1 || member.channel != index) continue;
      uint32_t group = member.group;
      RemoveMember(m);
      if (segment_->group(group).in_use == 1 && segment_->group(group).first_member == kNil) {
        Groups(*segment_).Remove(group, h.groups_used);
      }
    }
  }
  for (uint32_t steps = 0; c.head != kNil; ++steps) {
    if (steps > segment_->node_records()) segment_->Corrupt("queue loops");
    uint32_t n = c.head;
    uint32_t block = segment_->node(n).block;
    c.head = segment_->node(n).next;
    FAULT_POINT(16);
    ReleaseBlockRef(block);
    FreeNode(n);
    ++dropped;
  }
  c.tail = kNil;
  c.count = 0;
  for (uint64_t& w : c.waiters) w = 0;
  if (c.in_use == 1) Channels(*segment_).Remove(index, h.channels_used);
  return dropped;
}

// At most one segment-wide expiry sweep per this many ms, by whichever process comes first.
constexpr uint64_t kExpirySweepMs = 1000;

bool Layer::Maintain(const std::vector<std::string>* still_waiting) {
  CheckOpen();
  if (segment_->IsUnlinked()) return false;
  uint64_t now = MonotonicMs();
  Critical guard(*this, LockOp::kMaintain);
  Header& h = segment_->header();
  ReclaimDeadSlots();
  // The expiry sweep walks every membership and every queue under the lock; once per interval
  // for the whole segment is enough (expired messages are also dropped wherever a call meets
  // them), so with N processes it no longer runs N times per interval. Our own stale waits
  // below are ours alone to drop, every time.
  const uint64_t swept_at = h.expiry_swept_at_ms;
  const bool sweep = now >= swept_at + kExpirySweepMs || swept_at > now;
  if (sweep) h.expiry_swept_at_ms = now;
  for (uint32_t m = 0; sweep && m < segment_->member_records(); ++m) {
    Member& member = segment_->member(m);
    if (member.in_use != 1 || member.expires_at_ms > now) continue;
    uint32_t group = member.group;
    RemoveMember(m);
    if (segment_->group(group).in_use == 1 && segment_->group(group).first_member == kNil) {
      Groups(*segment_).Remove(group, h.groups_used);
    }
  }
  // Our registrations on channels we no longer wait on would pin their records forever.
  std::vector<bool> keep_wait;
  if (still_waiting) {
    keep_wait.assign(segment_->channel_records(), false);
    auto table = Channels(*segment_);
    for (const std::string& name : *still_waiting) {
      uint32_t index = table.Find(name);
      if (index < keep_wait.size()) keep_wait[index] = true;
    }
  }
  const uint64_t my_bit = uint64_t{1} << (slot_ % 64);
  for (uint32_t c = 0; c < segment_->channel_records(); ++c) {
    Channel& ch = segment_->channel(c);
    if (ch.in_use != 1) continue;
    bool stale_wait = still_waiting && (ch.waiters[slot_ / 64] & my_bit) && !keep_wait[c];
    if ((ch.head == kNil || !sweep) && !stale_wait) continue;
    if (stale_wait) ch.waiters[slot_ / 64] &= ~my_bit;
    if (sweep) DropHeadExpired(ch, now);
    // A wake-up we were given for it goes to another waiter.
    if (stale_wait && ch.head != kNil && HasWaiters(ch)) WakeWaiters(ch, c, false, slot_);
    MaybeReleaseChannel(c);
  }
  // Nothing sent since our last round: the layer is idle, give its empty arena chunks back.
  if (h.messages_sent == sent_at_last_maintain_) arena_->Trim();
  sent_at_last_maintain_ = h.messages_sent;
  return true;
}

void Layer::ReleaseSlot() {
  if (slot_ == kNil) return;
  try {
    Critical guard(*this);
    ReclaimSlotLocked(slot_);
    // The last process out gives back the memory no queued message needs.
    if (!AnyOtherSlotAlive()) {
      DropAllExpired(MonotonicMs());
      arena_->Trim();
    }
  } catch (...) {
    // Busy (a stopped holder) or damaged: leave the slot as a dead process would. Dropping the
    // OFD lock below is enough for others to reclaim it with our '!' channels and waits.
  }
  segment_->UnlockSlotByte(slot_);
}

void Layer::Close() {
  if (closed_) return;
  closed_ = true;
  ReleaseSlot();
  // The doorbell's descriptors go now, not when the owner of this object gets round to
  // destroying it (a garbage-collected JS handle may live on for a long time after close()).
  // Senders that still ring us get "no reader" and count a failed ring, nothing worse.
  doorbells_.reset();
}

uint32_t Layer::CapacityOf(std::string_view channel) const {
  if (options_.channel_capacity.empty()) return options_.capacity;
  std::string name(channel);
  for (const auto& [pattern, capacity] : options_.channel_capacity) {
    if (fnmatch(pattern.c_str(), name.c_str(), 0) == 0) return capacity;
  }
  return options_.capacity;
}

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

uint32_t Layer::CapacityOf(const Channel& record, std::string_view name) const {
  uint32_t word = LoadOnce(record.cached_capacity);
  uint32_t capacity = word & kCapacityMask;
  if (capacity != 0 && (word >> kCapacityBits) == CapacityCheck(capacity_tag_, capacity)) return capacity;
  return CapacityOf(name);
}

uint32_t Layer::EnsureChannel(std::string_view name) {
  auto table = Channels(*segment_);
  uint32_t index = table.Find(name);
  if (index != kNil) return index;
  Header& h = segment_->header();
  // Matched once, when the record is made: later sends and groupSends read it from the record.
  const uint32_t capacity = CapacityOf(name);
  auto init = [&](Channel& c) {
    c.cached_capacity = CachedCapacityWord(capacity_tag_, capacity);
  };
  index = table.Insert(name, h.channel_rover, h.channels_used, init);
  // Every existing record is taken: the table grows by a step, reserved in /dev/shm first.
  while (index == kNil && segment_->GrowTable(Segment::Table::kChannels) != kNil) {
    index = Channels(*segment_).Insert(name, h.channel_rover, h.channels_used, init);
  }
  if (index == kNil) {
    throw Error(ErrorCode::kTableFull,
                "no free channel record (maxChannels " + std::to_string(segment_->channel_limit()) + ")");
  }
  return index;
}

void Layer::MaybeReleaseChannel(uint32_t index) {
  Channel& c = segment_->channel(index);
  if (c.in_use == 1 && c.head == kNil && c.memberships == 0 && !HasWaiters(c)) {
    Channels(*segment_).Remove(index, segment_->header().channels_used);
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

// The payload is copied (and checksummed) while the segment lock is held: ~0.5 ms for 5 MB warm,
// up to ~3 ms when the pages are touched for the first time, and Receive's copy out likewise.
// Taking the copies out of the lock needs two short critical sections per message (reserve a
// block tagged with its owner's slot, copy unlocked, publish; receive: pop and pin, copy, unpin)
// and recovery that frees blocks of dead owners only; not done yet (review finding 13).
uint32_t Layer::StoreBlock(const uint8_t* data, uint32_t length) {
  uint32_t block = arena_->Allocate(length);
  if (block == kNil) {
    throw Error(ErrorCode::kArenaFull,
                "the segment's message arena has no room for " + std::to_string(length) +
                    " bytes (" + std::to_string(uint64_t{segment_->header().used_pages} * kPageSize) +
                    " of " + std::to_string(uint64_t{segment_->page_count()} * kPageSize) +
                    " bytes in use): receive what is queued, or create the layer with a larger `size`");
  }
  segment_->block(block).checksum = CopyWithCrc32c(arena_->Payload(block), data, length);
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

void Layer::DropHeadExpired(Channel& c, uint64_t now) {
  Header& h = segment_->header();
  for (uint32_t steps = 0; c.head != kNil; ++steps) {
    if (steps > segment_->node_records()) segment_->Corrupt("queue loops");
    Node& n = segment_->node(c.head);
    if (n.expires_at_ms > now) break;
    uint32_t index = c.head;
    uint32_t block = n.block;
    c.head = n.next;
    FAULT_POINT(7);
    if (c.head == kNil) c.tail = kNil;
    if (c.count) --c.count;
    ReleaseBlockRef(block);
    FreeNode(index);
    ++h.messages_expired;
  }
}

void Layer::Enqueue(uint32_t channel_index, uint32_t block, uint64_t expires_at) {
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
  segment_->block(block).refcount += 1;
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

void Layer::NoteReady(uint32_t slot_index, uint32_t channel_index) {
  pending_ring_[slot_index / 64] |= uint64_t{1} << (slot_index % 64);
  Slot& s = segment_->slot(slot_index);
  uint32_t n = s.ready_count < kReadyEntries ? s.ready_count : kReadyEntries;
  for (uint32_t i = 0; i < n; ++i) {
    if (s.ready[i] == channel_index) return;
  }
  if (n < kReadyEntries) {
    s.ready[n] = channel_index;
    s.ready_count = n + 1;
  } else {
    s.ready_overflow = 1;
  }
}

void Layer::WakeWaiters(Channel& c, uint32_t channel_index, bool all, uint32_t except) {
  // The waiter bits stay set: a receiver withdraws its own bit once it got all it waited for.
  // So the record cannot be released while someone still waits on it, and the ready entry we
  // leave names a live record until that receiver has looked.
  if (all) {
    for (uint32_t w = 0; w < kSlotMaskWords; ++w) {
      for (uint64_t bits = c.waiters[w]; bits; bits &= bits - 1) {
        NoteReady(w * 64 + static_cast<uint32_t>(__builtin_ctzll(bits)), channel_index);
      }
    }
    return;
  }
  // One waiter per message, not the herd: the next set bit after the one woken last. Whoever
  // takes the message and leaves more behind wakes the next (Receive), so none is stranded.
  // Word by word (the send path runs this for every message): the candidates are the set bits
  // other than `except`, searched from just after the rover, wrapping around once.
  uint64_t words[kSlotMaskWords];
  bool any = false;
  for (uint32_t w = 0; w < kSlotMaskWords; ++w) {
    words[w] = c.waiters[w];
    if (except < kMaxSlots && except / 64 == w) words[w] &= ~(uint64_t{1} << (except % 64));
    any = any || words[w] != 0;
  }
  if (!any) return;
  uint32_t start = c.wake_rover < kMaxSlots ? (c.wake_rover + 1) % kMaxSlots : 0;
  for (uint32_t k = 0; k <= kSlotMaskWords; ++k) {
    uint32_t w = (start / 64 + k) % kSlotMaskWords;
    uint64_t bits = words[w];
    if (k == 0) bits &= ~uint64_t{0} << (start % 64);  // at or after `start` in its own word
    if (!bits) continue;
    uint32_t index = w * 64 + static_cast<uint32_t>(__builtin_ctzll(bits));
    c.wake_rover = index;
    NoteReady(index, channel_index);
    return;
  }
}

void Layer::MarkAllReady() {
  for (uint32_t i = 0; i < kMaxSlots; ++i) segment_->slot(i).ready_overflow = 1;
}

void Layer::Unwait(const std::vector<std::string>& channels) {
  CheckOpen();
  for (const std::string& name : channels) ValidateName(name, true, "channel");
  Critical guard(*this);
  const uint64_t my_bit = uint64_t{1} << (slot_ % 64);
  for (const std::string& name : channels) {
    uint32_t index = Channels(*segment_).Find(name);
    if (index == kNil) continue;
    Channel& c = segment_->channel(index);
    c.waiters[slot_ / 64] &= ~my_bit;
    // We may have been the one woken for what it holds.
    if (c.head != kNil && HasWaiters(c)) WakeWaiters(c, index, false, slot_);
    MaybeReleaseChannel(index);
  }
}

bool Layer::TakeReady(std::vector<std::string>& names) {
  CheckOpen();
  Critical guard(*this);
  Slot& s = segment_->slot(slot_);
  // Consumed before the list is read: a ring after this point sets it again.
  s.bell.store(0, std::memory_order_seq_cst);
  bool complete = s.ready_overflow == 0 && s.ready_count <= kReadyEntries;
  if (complete) {
    for (uint32_t i = 0; i < s.ready_count; ++i) {
      uint32_t index = s.ready[i];
      if (index >= segment_->channel_records()) continue;
      Channel& c = segment_->channel(index);
      uint32_t length = LoadOnce(c.name_length);
      if (c.in_use != 1 || length == 0 || length > kMaxNameLength) continue;
      names.emplace_back(c.name, length);
    }
  }
  s.ready_count = 0;
  s.ready_overflow = 0;
  return complete;
}

void Layer::RingPending() noexcept {
  if (!doorbells_) return;  // closed: nothing of ours is rung any more
  for (uint32_t w = 0; w < kSlotMaskWords; ++w) {
    uint64_t bits = pending_ring_[w];
    pending_ring_[w] = 0;
    while (bits) {
      uint32_t index = w * 64 + static_cast<uint32_t>(__builtin_ctzll(bits));
      bits &= bits - 1;
      doorbells_->Ring(segment_->slot(index), index);
    }
  }
}

bool Layer::Send(std::string_view channel, const uint8_t* data, uint32_t length) {
  CheckOpen();
  ValidateName(channel, true, "channel");
  Header& h = segment_->header();
  if (length > segment_->max_message_size()) {
    throw Error(ErrorCode::kTooLarge, "message of " + std::to_string(length) +
                                          " bytes exceeds maxMessageSize " +
                                          std::to_string(segment_->max_message_size()));
  }
  uint64_t now = MonotonicMs();
  Critical guard(*this, LockOp::kSend);
  uint32_t index = Channels(*segment_).Find(channel);
  if (index == kNil) {
    // No record: for a '!' channel of an instance that is gone, nobody could ever receive it (an
    // existing record of one is reclaimed, messages and all, by the next housekeeping).
    std::string_view client = ClientOf(channel);
    if (!client.empty() && !IsClientAttached(client)) {
      ++h.messages_orphaned;
      return false;
    }
    index = EnsureChannel(channel);
  }
  Channel& c = segment_->channel(index);
  const uint32_t capacity = CapacityOf(c, channel);
  DropHeadExpired(c, now);
  if (c.count >= capacity) {
    MaybeReleaseChannel(index);
    ++h.sends_refused_full;
    throw Error(ErrorCode::kChannelFull, "channel " + std::string(channel) + " is full (capacity " +
                                             std::to_string(capacity) + ")");
  }
  uint32_t block = kNil;
  try {
    block = StoreBlock(data, length);
    Enqueue(index, block, now + options_.expiry_ms);
  } catch (...) {
    ReleaseUnqueuedBlock(block);
    MaybeReleaseChannel(index);
    throw;
  }
  ++h.messages_sent;
  return true;
}

uint32_t Layer::GroupSend(std::string_view group, const uint8_t* data, uint32_t length) {
  CheckOpen();
  ValidateName(group, false, "group");
  Header& h = segment_->header();
  if (length > segment_->max_message_size()) {
    throw Error(ErrorCode::kTooLarge, "message of " + std::to_string(length) +
                                          " bytes exceeds maxMessageSize " +
                                          std::to_string(segment_->max_message_size()));
  }
  uint64_t now = MonotonicMs();
  Critical guard(*this, LockOp::kGroupSend);
  uint32_t g = FindGroup(group);
  if (g == kNil) return 0;
  uint32_t block = kNil;
  uint32_t delivered = 0;
  bool out_of_space = false;  // the arena or node pool ran out: the rest are skipped too
  uint32_t m = segment_->group(g).first_member;
  for (uint32_t steps = 0; m != kNil; ++steps) {
    if (steps > segment_->member_records()) segment_->Corrupt("group member list loops");
    Member& member = segment_->member(m);
    uint32_t next = member.next_in_group;
    if (member.expires_at_ms <= now) {
      RemoveMember(m);
      m = next;
      continue;
    }
    Channel& c = segment_->channel(member.channel);
    DropHeadExpired(c, now);
    uint32_t name_length = LoadOnce(c.name_length);
    std::string_view name(c.name, name_length < kMaxNameLength ? name_length : kMaxNameLength);
    if (!out_of_space && c.count < CapacityOf(c, name)) {
      try {
        if (block == kNil) block = StoreBlock(data, length);
        Enqueue(member.channel, block, now + options_.expiry_ms);
        ++delivered;
      } catch (const Error& e) {
        ReleaseUnqueuedBlock(block);
        // Out of arena or nodes: the members not reached yet are skipped, as full ones are.
        // Only a message that reached nobody is reported, so the sender knows it went nowhere.
        if (e.code() != ErrorCode::kArenaFull || delivered == 0) throw;
        out_of_space = true;
        ++h.deliveries_skipped_full;
      }
    } else {
      ++h.deliveries_skipped_full;
    }
    m = next;
  }
  if (block != kNil && delivered == 0) arena_->Free(block);
  h.messages_sent += delivered;
  if (segment_->group(g).first_member == kNil) Groups(*segment_).Remove(g, h.groups_used);
  return delivered;
}

void Layer::Receive(const std::vector<ReceiveRequest>& requests, ReceivedBatch& out,
                    bool covers_all_waits) {
  CheckOpen();
  // Before the lock: a bad name in the batch fails the whole call and touches nothing.
  for (const ReceiveRequest& req : requests) ValidateName(req.channel, true, "channel");
  uint64_t now = MonotonicMs();
  Critical guard(*this, LockOp::kReceive);
  Header& h = segment_->header();
  const uint64_t my_bit = uint64_t{1} << (slot_ % 64);
  Slot& me = segment_->slot(slot_);
  // Consumed before any queue is looked at: a message queued after this point rings again.
  if (covers_all_waits) me.bell.store(0, std::memory_order_seq_cst);
  // Phase 1 copies payloads out and registers us as a waiter where we are left short; nothing is
  // popped yet, so an error or our death here takes no message with it.
  std::vector<std::pair<uint32_t, uint32_t>> pops;  // (channel, nodes to pop from its head)
  bool damaged_blocks = false;
  std::vector<uint32_t> asked;  // channel of each request, when the ready list is answered too
  pops.reserve(requests.size());
  std::unordered_set<uint32_t> walked_channels;
  if (requests.size() > 1) walked_channels.reserve(requests.size());
  for (uint32_t r = 0; r < requests.size(); ++r) {
    const ReceiveRequest& req = requests[r];
    if (req.wanted == 0) continue;
    uint32_t index = Channels(*segment_).Find(req.channel);
    // Two walks of one queue would copy its head twice. A set, not a scan of `pops`: a drain over
    // thousands of channels must stay linear under the lock.
    if (requests.size() > 1 && index != kNil && !walked_channels.insert(index).second) {
      throw Error(ErrorCode::kInvalidArgument, "a receive batch names a channel twice");
    }
    uint32_t got = 0, walked = 0;
    if (index != kNil) {
      Channel& c = segment_->channel(index);
      for (uint32_t n = LoadOnce(c.head); got < req.wanted && n != kNil;) {
        if (++walked > segment_->node_records()) segment_->Corrupt("queue loops");
        // Every field used below is read once into a local and checked there: another process
        // may rewrite the node or the block header while we look.
        const Node& shared_node = segment_->node(n);
        const uint32_t block = LoadOnce(shared_node.block);
        const uint64_t expires_at = LoadOnce(shared_node.expires_at_ms);
        n = LoadOnce(shared_node.next);
        if (expires_at <= now) continue;
        ++got;
        out.request_of.push_back(r);
        BlockInfo info = segment_->ReadBlock(block);
        if (!info.message) {
          out.length_of.push_back(kDamagedMessage);
          damaged_blocks = true;
          continue;
        }
        size_t at = out.bytes.size();
        uint8_t* into = AppendRoom(out.bytes, info.length);
        // Checked as it is copied: what we hand out is exactly what was checked, even if a
        // hostile writer changes the arena under us.
        if (CopyWithCrc32c(into, arena_->Payload(block), info.length) != info.checksum) {
          out.bytes.resize(at);
          out.length_of.push_back(kDamagedMessage);
          continue;
        }
        out.length_of.push_back(info.length);
      }
      if (walked) pops.emplace_back(index, walked);
    }
    if (got < req.wanted) {
      if (index == kNil) index = EnsureChannel(req.channel);
      segment_->channel(index).waiters[slot_ / 64] |= my_bit;
    } else {
      segment_->channel(index).waiters[slot_ / 64] &= ~my_bit;
    }
    if (covers_all_waits) asked.push_back(index);
  }
  FAULT_POINT(3);
  // Phase 2 commits: pops what phase 1 copied, and the expired messages it stepped over.
  for (auto [index, count] : pops) {
    Channel& c = segment_->channel(index);
    for (uint32_t i = 0; i < count; ++i) {
      uint32_t node_index = LoadOnce(c.head);
      if (node_index == kNil) break;
      Node& n = segment_->node(node_index);
      bool expired = LoadOnce(n.expires_at_ms) <= now;
      uint32_t block = LoadOnce(n.block);
      uint32_t next = LoadOnce(n.next);
      c.head = next;
      if (next == kNil) c.tail = kNil;
      if (c.count) --c.count;
      if (segment_->IsValidBlock(block)) ReleaseBlockRef(block);
      FreeNode(node_index);
      if (expired) ++h.messages_expired; else ++h.messages_received;
    }
    // We leave messages behind (we wanted fewer): wake another waiter for them.
    if (c.head != kNil && HasWaiters(c)) WakeWaiters(c, index, false, slot_);
    MaybeReleaseChannel(index);
  }
  if (covers_all_waits) {
    // Every channel we still wait on was asked for above, so the ready list is answered, except
    // for ready channels we no longer wait on (cancelled receives): withdraw those waits and pass
    // their wake-up on, or another waiter would sleep beside a queued message.
    uint32_t n = me.ready_count < kReadyEntries ? me.ready_count : kReadyEntries;
    for (uint32_t i = 0; i < n; ++i) {
      uint32_t index = me.ready[i];
      if (index >= segment_->channel_records()) continue;
      Channel& c = segment_->channel(index);
      if (c.in_use != 1 || !(c.waiters[slot_ / 64] & my_bit)) continue;
      bool found = false;
      for (uint32_t k : asked) found = found || k == index;
      if (found) continue;
      c.waiters[slot_ / 64] &= ~my_bit;
      if (c.head != kNil && HasWaiters(c)) WakeWaiters(c, index, false, slot_);
      MaybeReleaseChannel(index);
    }
    me.ready_count = 0;
    me.ready_overflow = 0;
  }
  for (uint32_t length : out.length_of) {
    if (length == kDamagedMessage) ++h.messages_damaged;
  }
  // A damaged block header leaves its pages unaccounted for: rebuild the page map.
  if (damaged_blocks) Recover();
}

uint32_t Layer::FindGroup(std::string_view name) const { return Groups(*segment_).Find(name); }

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
  uint32_t* link = &segment_->member_bucket(HashPair(m.group, m.channel) & (segment_->member_buckets() - 1));
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

void Layer::GroupAdd(std::string_view group, std::string_view channel) {
  CheckOpen();
  ValidateName(group, false, "group");
  ValidateName(channel, true, "channel");
  uint64_t expires_at = MonotonicMs() + options_.group_expiry_ms;
  Critical guard(*this, LockOp::kGroupAdd);
  Header& h = segment_->header();
  auto groups = Groups(*segment_);
  uint32_t g = groups.Find(group);
  bool new_group = g == kNil;
  if (new_group) {
    g = groups.Insert(group, h.group_rover, h.groups_used);
    while (g == kNil && segment_->GrowTable(Segment::Table::kGroups) != kNil) {
      g = Groups(*segment_).Insert(group, h.group_rover, h.groups_used);
    }
    if (g == kNil) {
      throw Error(ErrorCode::kTableFull,
                  "no free group record (maxGroups " + std::to_string(segment_->group_limit()) + ")");
    }
  }
  uint32_t c;
  try {
    c = EnsureChannel(channel);
  } catch (...) {
    if (new_group) groups.Remove(g, h.groups_used);
    throw;
  }
  uint32_t existing = FindMember(g, c);
  if (existing != kNil) {
    segment_->member(existing).expires_at_ms = expires_at;
    return;
  }
  uint32_t m = kNil;
  if (h.members_used < segment_->member_records()) {
    for (uint32_t n = 0; n < segment_->member_records(); ++n) {
      uint32_t i = (h.member_rover + n) % segment_->member_records();
      if (segment_->member(i).in_use == 0) {
        m = i;
        break;
      }
    }
  }
  if (m == kNil) {
    try {
      m = segment_->GrowTable(Segment::Table::kMembers);  // the first record of the new step
    } catch (...) {
      MaybeReleaseChannel(c);
      if (new_group) groups.Remove(g, h.groups_used);
      throw;
    }
  }
  if (m == kNil) {
    MaybeReleaseChannel(c);
    if (new_group) groups.Remove(g, h.groups_used);
    throw Error(ErrorCode::kTableFull,
                "no free group membership record (maxMembers " + std::to_string(segment_->member_limit()) + ")");
  }
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

void Layer::GroupDiscard(std::string_view group, std::string_view channel) {
  CheckOpen();
  ValidateName(group, false, "group");
  ValidateName(channel, true, "channel");
  Critical guard(*this, LockOp::kGroupDiscard);
  uint32_t g = FindGroup(group);
  if (g == kNil) return;
  uint32_t c = Channels(*segment_).Find(channel);
  if (c == kNil) return;
  uint32_t m = FindMember(g, c);
  if (m == kNil) return;
  RemoveMember(m);
  if (segment_->group(g).first_member == kNil) {
    Groups(*segment_).Remove(g, segment_->header().groups_used);
  }
}

std::vector<std::string> Layer::GroupMembers(std::string_view group) {
  CheckOpen();
  ValidateName(group, false, "group");
  uint64_t now = MonotonicMs();
  std::vector<std::string> names;
  Critical guard(*this);
  uint32_t g = FindGroup(group);
  if (g == kNil) return names;
  uint32_t m = segment_->group(g).first_member;
  for (uint32_t steps = 0; m != kNil; ++steps) {
    if (steps > segment_->member_records()) segment_->Corrupt("group member list loops");
    // Copied once: what is checked is what is used, whatever another process writes meanwhile.
    const Member member = segment_->member(m);
    m = member.next_in_group;
    if (member.in_use != 1 || member.group != g || member.expires_at_ms <= now) continue;
    const Channel& channel = segment_->channel(member.channel);
    const uint32_t length = channel.name_length;
    if (channel.in_use != 1 || length == 0 || length > kMaxNameLength) continue;
    names.emplace_back(channel.name, length);
  }
  return names;
}

void Layer::Flush() {
  CheckOpen();
  Critical guard(*this, LockOp::kFlush);
  Header& h = segment_->header();
  for (uint32_t i = 0; i < segment_->member_records(); ++i) segment_->member(i).in_use = 0;
  for (uint32_t i = 0; i < segment_->group_records(); ++i) segment_->group(i).in_use = 0;
  FAULT_POINT(6);
  for (uint32_t i = 0; i < segment_->channel_records(); ++i) {
    Channel& c = segment_->channel(i);
    if (c.in_use != 1) continue;
    // Receivers that were waiting must look again and re-register on fresh records (Recover
    // below marks every slot's ready list as overflowed, so they look at everything).
    for (uint32_t w = 0; w < kSlotMaskWords; ++w) pending_ring_[w] |= c.waiters[w];
    c.in_use = 0;
  }
  // Everything derived (queues, free lists, arena, buckets) is rebuilt from the now-empty tables.
  Recover();
  ++h.flush_epoch;
}

uint32_t Layer::ReleaseChannel(std::string_view channel) {
  CheckOpen();
  ValidateName(channel, true, "channel");
  Critical guard(*this);
  Header& h = segment_->header();
  uint32_t index = Channels(*segment_).Find(channel);
  if (index == kNil) return 0;
  uint32_t dropped = DropChannel(index);
  h.messages_orphaned += dropped;
  return dropped;
}

bool Layer::Arm() {
  Slot& s = segment_->slot(slot_);
  // Dekker handshake with Doorbells::Ring: publish `sleeping`, then look at the bell.
  s.sleeping.store(1, std::memory_order_seq_cst);
  if (s.bell.load(std::memory_order_seq_cst) == 0) return true;
  s.sleeping.store(0, std::memory_order_seq_cst);
  return false;
}

void Layer::Disarm() {
  segment_->slot(slot_).sleeping.store(0, std::memory_order_seq_cst);
  if (doorbells_) doorbells_->DrainOwn();
}

bool Layer::TakeBell() { return segment_->slot(slot_).bell.exchange(0, std::memory_order_seq_cst) != 0; }

uint64_t Layer::slot_offset() const {
  return static_cast<uint64_t>(reinterpret_cast<uint8_t*>(&segment_->slot(slot_)) - segment_->base());
}

SegmentConfig Layer::Config() const {
  SegmentConfig c = options_.segment;
  c.size = segment_->size();
  c.max_channels = segment_->channel_limit();
  c.max_groups = segment_->group_limit();
  c.max_members = segment_->member_limit();
  c.max_nodes = segment_->node_limit();
  c.max_message_size = segment_->max_message_size();
  return c;
}

LayerStats Layer::Stats() {
  CheckOpen();
  Critical guard(*this);
  Header& h = segment_->header();
  LayerStats s{};
  for (uint32_t i = 0; i < kMaxSlots; ++i) {
    if (segment_->slot(i).state.load() != 0 && IsSlotAlive(i)) ++s.slots_attached;
  }
  s.channels = h.channels_used;
  s.groups = h.groups_used;
  s.members = h.members_used;
  s.queued = segment_->node_records() - h.free_nodes;
  s.nodes_free = segment_->node_limit() - s.queued;  // how many more may queue (records grow)
  s.arena_bytes = uint64_t{segment_->page_count()} * kPageSize;
  s.arena_used_bytes = uint64_t{h.used_pages} * kPageSize;
  s.segment_bytes = h.segment_size;
  s.shm_bytes = segment_->ShmBytes();
  s.messages_sent = h.messages_sent;
  s.messages_received = h.messages_received;
  s.messages_expired = h.messages_expired;
  s.messages_damaged = h.messages_damaged;
  s.deliveries_skipped_full = h.deliveries_skipped_full;
  s.sends_refused_full = h.sends_refused_full;
  s.messages_orphaned = h.messages_orphaned;
  s.lock_recoveries = h.lock.recoveries.load();
  s.ring_failures = doorbells_ ? doorbells_->ring_failures() : 0;
  return s;
}

std::vector<ChannelInfo> Layer::ListChannels(uint32_t limit) {
  CheckOpen();
  Critical guard(*this);
  std::vector<ChannelInfo> out;
  for (uint32_t i = 0; i < segment_->channel_records() && out.size() < limit; ++i) {
    Channel& c = segment_->channel(i);
    if (c.in_use != 1) continue;
    uint32_t len = LoadOnce(c.name_length);
    if (len > kMaxNameLength) len = kMaxNameLength;
    out.push_back({std::string(c.name, len), c.count, c.memberships});
  }
  return out;
}

std::vector<GroupInfo> Layer::ListGroups(uint32_t limit) {
  CheckOpen();
  Critical guard(*this);
  std::vector<GroupInfo> out;
  for (uint32_t i = 0; i < segment_->group_records() && out.size() < limit; ++i) {
    Group& g = segment_->group(i);
    if (g.in_use != 1) continue;
    uint32_t len = LoadOnce(g.name_length);
    if (len > kMaxNameLength) len = kMaxNameLength;
    out.push_back({std::string(g.name, len), g.member_count});
  }
  return out;
}

}  // namespace shmch
