// The channel layer over one shared segment: queues, groups, expiry and wakeups. Plain C++ with no
// Node-API, so it can be unit-tested, fuzzed and run under sanitizers on its own.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "arena.h"
#include "backpressure.h"
#include "doorbell.h"
#include "lock_hold.h"
#include "segment.h"

namespace shmch {

struct LayerOptions {
  SegmentConfig segment;
  uint32_t capacity = 100;
  // fnmatch(3) glob -> capacity; first match wins (as channels_redis does).
  std::vector<std::pair<std::string, uint32_t>> channel_capacity;
  uint64_t expiry_ms = 60'000;
  uint64_t group_expiry_ms = 86'400'000;
  // Client id of this instance's process-local channels ('<prefix>.<client>!<random>').
  std::string client_id;
  // How long an operation waits for a live holder of the segment lock before it throws kBusy.
  uint64_t lock_wait_ns = UINT64_MAX;
};

enum class SendOutcome : uint8_t {
  kQueued,
  kOrphaned,  // for a '!' channel whose instance is gone: dropped and counted
  kFull,      // the channel holds its capacity: nothing was queued
};

// What one receive batch asks of a channel: up to `wanted` messages, then up to `extra` more
// while the call's extra-byte budget lasts (a receiver that buffers its own '!' channels' next
// messages, as channels_redis does). Only `wanted` decides whether the caller waits there.
// A payload given in pieces, copied one after the other into its block: a serializer's bytes
// around the large binary values it did not copy (the user's own buffers), so that a large
// message is copied once on its way into the segment.
struct PayloadPiece {
  const uint8_t* data;
  uint32_t length;
};

// Copies the pieces back to back to `into`; returns the CRC-32C of the whole (payload.cc).
uint32_t CopyPieces(uint8_t* into, const PayloadPiece* pieces, uint32_t count);
// CopyWithCrc32c() for a copy made with no lock held: in slices, letting a process that waits
// for this CPU run between them (see payload.cc).
uint32_t CopyWithCrc32cYielding(uint8_t* destination, const uint8_t* source, size_t length,
                                uint32_t previous = 0);

struct ReceiveRequest {
  std::string channel;
  uint32_t wanted;
  uint32_t extra = 0;
};

// Messages handed out by Receive(): payloads back to back in `bytes`; for each message the index
// of its request and its length, in delivery order.
// Length reported for a message whose stored bytes failed their checksum: it is dropped, and its
// receiver is told so instead of getting garbage.
constexpr uint32_t kDamagedMessage = 0xffffffffu;

// Leaves new elements uninitialised: a receive buffer is written over at once, and zero-filling
// megabytes first would cost as much as the copy itself.
template <typename T>
struct UninitializedAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  using std::allocator<T>::allocator;
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

// Payloads copied out of the segment, back to back.
using PayloadBytes = std::vector<uint8_t, UninitializedAllocator<uint8_t>>;

// Bytes the binding appends after a batch's payloads (12 per message, and a count): reserved with
// the first payload, so a 5 MB receive does not grow to 10 MB (a second copy of the payload and
// twice the fresh pages) when the trailer is added.
constexpr size_t kReceiveTrailerSlack = 4096;

// Makes room for `length` more bytes at the end of `bytes` and returns where they go. Grows
// geometrically for batches of many messages, exactly (plus the trailer) for the first.
template <typename Bytes>
uint8_t* AppendRoom(Bytes& bytes, size_t length) {
  const size_t at = bytes.size();
  const size_t needed = at + length + kReceiveTrailerSlack;
  if (bytes.capacity() < needed) {
    size_t doubled = bytes.capacity() * 2;
    bytes.reserve(at == 0 || doubled < needed ? needed : doubled);
  }
  bytes.resize(at + length);
  return bytes.data() + at;
}

// Memory for a batch whose large payloads are copied outside the lock (payload.cc), asked for
// once that lock is released. The binding gives memory the JavaScript engine allocates and
// collects, which its heap reuses warm; the batch's own vector, handed to JS, is fresh pages per
// message instead (a 5 MB receive faulted ~1,220 pages and held them until the next full GC).
class PayloadRoom {
 public:
  virtual ~PayloadRoom() = default;
  // Room for a batch of `size` payload bytes, or nullptr to keep it in the batch's `bytes`.
  // Must not throw: the batch's messages are already ours.
  virtual uint8_t* Room(size_t size) noexcept = 0;
};

// Where a batch's payloads are: in its `bytes`, or `size` bytes at `at`, which its `room` gave.
struct PayloadPlacement {
  PayloadRoom* room = nullptr;  // set by the caller, or nullptr for `bytes` always
  uint8_t* at = nullptr;
  size_t size = 0;
};

struct ReceivedBatch {
  PayloadBytes bytes;
  PayloadPlacement placed;
  std::vector<uint32_t> request_of;
  std::vector<uint32_t> length_of;
  // Per message, ms until it expires (at least 1): a receiver that keeps a message for later
  // drops it when that has passed, as the queue would have.
  std::vector<uint32_t> expires_in_ms;
  // Per message, how many target channels it has (0: a message of the requested channel itself;
  // more for a message taken from an inbox, '<prefix>.<client>!'); the targets of all messages
  // follow each other in `targets`, each an index into the batch's table of names.
  std::vector<uint32_t> target_count_of;
  std::vector<uint32_t> targets;
  // The distinct target channels of the batch, each once: per name a u32 length, then its bytes
  // zero-padded to a multiple of 4 (the binding hands the table over as it is).
  std::vector<uint8_t> target_names;
  uint32_t target_name_count = 0;
  // Requests for an inbox ('<prefix>.<client>!') that this receive emptied: our wait there was
  // kept, not withdrawn, so the next entry rings us and the owner's next receive need not call
  // in only to find the inbox empty. Only inboxes: nobody else receives there, so a kept wait
  // never takes a wake-up from another receiver.
  std::vector<uint32_t> emptied;
  void Clear() {
    bytes.clear();
    emptied.clear();
    request_of.clear();
    length_of.clear();
    expires_in_ms.clear();
    target_count_of.clear();
    targets.clear();
    target_names.clear();
    target_name_count = 0;
  }
};

// Where a send goes: the queue the node is put on and its Node::target. A '!' channel of an
// instance ('<prefix>.<client>!<x>') is served through that instance's inbox, the channel named
// '<prefix>.<client>!': every direct send and every group delivery to its '!' channels is one
// node there, so one process's messages keep their order whichever way they came, a group send
// makes one node per process, and the payload is decoded once per process. `queue` kNil: an
// orphaned '!' channel (its instance is gone).
struct SendTarget {
  uint32_t queue = kNil;
  uint32_t target = kNil;  // the '!' channel's own record, or kNil for an ordinary channel
};

// Messages handed out by ReceiveAny(): payloads back to back in `bytes`; per message the
// position (in its channel set) of its channel and its length; the positions this call looked at
// that still hold messages (our wait there is withdrawn); and how many channels of the set are
// known to hold messages (`held`: the next call takes from them without being told).
struct AnyBatch {
  PayloadBytes bytes;
  PayloadPlacement placed;
  std::vector<uint32_t> position_of;
  std::vector<uint32_t> length_of;
  std::vector<uint32_t> still_ready;
  uint32_t held = 0;
  // With `answer_bell`: the channels outside the set that rang us (for other receives), and
  // whether more rang than were recorded (then every waiting channel must be looked at).
  std::vector<std::string> other_ready;
  bool ready_overflow = false;
};

// A receiveAny channel set, this instance's own: the names, a cached record index per name
// (checked against the name before each use) and a min-heap of the heads (by Node::seq) of the
// channels that held messages when last looked at. Heap entries go stale when another process
// takes those messages; a stale entry only ever understates its channel's head, so it is checked
// when it reaches the top, before anything is taken.
struct ChannelSetState {
  struct Head {
    uint64_t seq;
    uint32_t position;
    uint32_t node;
  };
  std::vector<std::string> names;
  std::vector<uint32_t> record;
  std::vector<uint8_t> in_heap;
  std::vector<Head> heap;
  std::vector<uint32_t> touch;  // scratch of one ReceiveAny call: position -> its entry, or kNil
  // What one ReceiveAny call does to a channel: its next unexpired node (kNil: none) and how many
  // nodes from the head it passed. Scratch of one call, kept so that a call allocates nothing.
  struct Touch {
    uint32_t position;
    uint32_t record;
    uint32_t cursor;
    uint32_t walked;
  };
  std::vector<Touch> touched;
  std::unordered_map<uint32_t, uint32_t> position_of_record;  // from `record`, checked on use
  std::unordered_map<std::string, uint32_t> position_of_name;
};

// Payloads of at least this many bytes are copied outside the segment lock (payload.cc); below it
// the copy costs less than the second critical section that taking it out needs.
constexpr uint32_t kOutOfLockBytes = 64u << 10;

// Channels in one receiveAny() set, at most.
constexpr uint32_t kMaxSetChannels = 65536;

struct LayerStats {
  uint32_t slots_attached;
  uint32_t channels;
  uint32_t groups;
  uint32_t members;
  uint32_t queued;
  uint32_t nodes_free;
  uint64_t arena_bytes;
  uint64_t arena_used_bytes;
  uint64_t segment_bytes;
  uint64_t shm_bytes;  // of /dev/shm the segment occupies now (memory on demand)
  uint64_t messages_sent;
  uint64_t messages_received;
  uint64_t messages_expired;
  uint64_t messages_damaged;
  uint64_t deliveries_skipped_full;
  uint64_t sends_refused_full;
  uint64_t messages_orphaned;
  uint32_t lock_recoveries;
  uint64_t ring_failures;  // this instance's rings that could not be delivered (cost: latency)
};

struct ChannelInfo {
  std::string name;
  uint32_t depth;
  uint32_t memberships;
};

struct GroupInfo {
  std::string name;
  uint32_t members;
};

class Layer {
 public:
  // --- Open, attach, close ---
  // Opens (creating it if need be) the layer's segment and attaches this instance to a slot.
  explicit Layer(const LayerOptions& options);
  ~Layer();
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;
  // Removes a layer's segment and doorbells by name.
  static bool Destroy(const std::string& layer_name);
  void Close();
  bool closed() const { return closed_; }

  // --- Send ---
  // Queues one message. Throws Error kChannelFull / kArenaFull / kTooLarge; never blocks on space.
  // A message for a '!' channel whose instance is no longer attached is dropped and counted
  // (nobody could ever receive it): returns false then.
  bool Send(std::string_view channel, const uint8_t* data, uint32_t length);
  // Send() that reports a full channel as an outcome, with the channel's capacity in `capacity`,
  // instead of throwing kChannelFull: a producer's retry loop meets that refusal on every turn,
  // and a C++ exception plus a JS error built from it cost several sends' worth (W1, W5).
  SendOutcome TrySend(std::string_view channel, const uint8_t* data, uint32_t length,
                      uint32_t& capacity);
  // TrySend() of the concatenation of `count` pieces (throws kTooLarge beyond maxMessageSize).
  SendOutcome TrySendPieces(std::string_view channel, const PayloadPiece* pieces, uint32_t count,
                            uint32_t& capacity);
  // Whether a send to `channel` would be refused as full now (then `capacity` is its capacity),
  // counted and backed off like a refused send. For a retry of a refused large message: it is
  // refused again without being serialized and copied. No record is created. While nothing was
  // taken from the queue since our last refusal of it, the answer needs no lock (see FullQueue).
  bool RefusesAsFull(std::string_view channel, uint32_t& capacity);

  // --- Receive ---
  // Pops messages for each request; a request left short registers this slot as a waiter on its
  // channel, so the next send rings our doorbell.
  // `covers_all_waits`: the requests name every channel this instance waits on. Then the same
  // critical section also consumes the bell and the ready list (one lock per wake-up), and
  // withdraws stale waits on ready channels the requests do not name, passing their wake-up on.
  // `extra_bytes`: how many payload bytes the requests' `extra` messages may take in all.
  void Receive(const std::vector<ReceiveRequest>& requests, ReceivedBatch& out,
               bool covers_all_waits = false, uint64_t extra_bytes = 0);

  // --- Receive any (receive_any.cc) ---
  // A channel set is defined once (its names checked then) and named by its id after, so a
  // receiver of many channels does not pass every name on every call. Sets are this instance's
  // own (not in shared memory).
  uint32_t DefineSet(const std::vector<std::string>& channels);
  void ForgetSet(uint32_t id);
  // Takes up to `wanted` messages from set `id`, oldest first by enqueue order among its channels
  // known to hold messages and those at `positions` (the ones that rang since); each channel's
  // own order holds. Registers this slot as a waiter on each channel it finds empty; withdraws
  // the wait from each that holds messages (it is looked at again without a ring) and passes its
  // wake-up on. With `answer_bell` the same critical section consumes the bell and the ready
  // list (one lock per wake-up): ready channels of the set join `positions`, the others are
  // reported in out.other_ready.
  void ReceiveAny(uint32_t id, const std::vector<uint32_t>& positions, uint32_t wanted,
                  AnyBatch& out, bool answer_bell = false);

  // --- New channel: names are made by the caller; the core checks them ---
  // The name rule: 1 to kMaxNameLength of [a-zA-Z0-9._-], and for channels one '!'.
  static bool IsValidName(std::string_view name, bool allow_bang);
  // Throws kInvalidArgument naming `what` (channel, group) and what is wrong.
  static void ValidateName(std::string_view name, bool allow_bang, const char* what);
  // The owner is finished with a '!' channel: drops its queued messages (counted as orphaned),
  // its group memberships, waiter registrations and record. Returns the messages dropped.
  uint32_t ReleaseChannel(std::string_view channel);
  // Messages a receiver took from the segment into its own buffer ('!' channels) and then
  // dropped unreceived: counted as expired, orphaned or skipped (a full buffer's oldest gave way)
  // instead of received, so the segment's counters still account for every message once.
  void CountBufferDrops(uint64_t expired, uint64_t orphaned, uint64_t skipped_full = 0);

  // --- Group add, group discard, group send, group members ---
  void GroupAdd(std::string_view group, std::string_view channel);
  void GroupDiscard(std::string_view group, std::string_view channel);
  // Sends to every live member with room; returns how many received it. The payload is stored once.
  uint32_t GroupSend(std::string_view group, const uint8_t* data, uint32_t length);
  // The channels of a group's live, unexpired memberships (none for an unknown group). Reads
  // only: expired memberships are left for GroupSend and Maintain to remove.
  std::vector<std::string> GroupMembers(std::string_view group);

  // --- Flush ---
  // Empties every channel and group of the segment.
  void Flush();

  // --- Housekeeping and expiry ---
  // Called every few seconds: reclaims dead instances' slots, '!' channels and memberships, and
  // drops expired messages and memberships nobody touched.
  // Returns false if the segment's name was removed or now names another segment: this instance
  // is cut off from processes that open the layer from now on.
  // `still_waiting`, when given, lists every channel this instance has receives waiting on: its
  // waiter registrations anywhere else are stale (a cancelled receive whose withdrawal was
  // missed) and are dropped, so their records are freed.
  bool Maintain(const std::vector<std::string>* still_waiting = nullptr);
  // For `prune`: when no other process is attached and no unexpired message is queued, removes
  // the layer (segment and doorbells) and closes this instance; true if it did. Otherwise it
  // only gives back the layer's empty memory.
  bool PruneIfUnused();
  // Names of the channels that rang this instance since it last asked. False when more rang than
  // were recorded (or state was rebuilt): then every waiting channel must be looked at.
  bool TakeReady(std::vector<std::string>& names);
  // Withdraws this instance's wait on channels it no longer receives from (cancelled receives).
  // A wake-up it was given for a channel that still holds messages goes to another waiter.
  void Unwait(const std::vector<std::string>& channels);
  // The doorbell, for the receiver's event loop: poll doorbell_fd() for reading. Before sleeping
  // on it, Arm(); it returns false (stay awake, look now) when a ring came in already. After a
  // wake-up, Disarm() (empties the FIFO too). TakeBell() consumes a ring without the lock.
  int doorbell_fd() const { return doorbells_ ? doorbells_->own_fd() : -1; }
  bool Arm();
  void Disarm();
  bool TakeBell();
  bool BellRung() const { return segment_->slot(slot_).bell.load(std::memory_order_seq_cst) != 0; }
  int segment_fd() const { return segment_->fd(); }
  // Where this instance's Slot lies in the segment file, so a view of its bell can be mapped.
  uint64_t slot_offset() const;
  // Bound of every later lock wait (kBusy after it); UINT64_MAX waits as long as the holder lives.
  void SetLockWait(uint64_t ns) { options_.lock_wait_ns = ns; }
  uint64_t lock_wait() const { return options_.lock_wait_ns; }

  // --- Stats and inspection ---
  LayerStats Stats();
  std::vector<ChannelInfo> ListChannels(uint32_t limit);
  std::vector<GroupInfo> ListGroups(uint32_t limit);
  // Walks every structure and returns the problems found (empty when consistent; recovery.cc).
  std::vector<std::string> Verify();
  // The sizes the segment was created with (an attach takes them from the segment, not options).
  SegmentConfig Config() const;
  // How often a refused Send() of this instance yielded the CPU (backpressure.h).
  uint64_t refusal_yields() const { return backoff_.yields(); }

  // How long this instance held the segment lock, per operation (private memory, always on).
  const LockHoldStats& lock_hold() const { return lock_hold_; }
  void ResetLockHold() { lock_hold_ = LockHoldStats{}; }
  uint32_t slot_index() const { return slot_; }
  uint32_t slot_generation() const { return generation_; }
  bool IsUnlinked() const { return segment_->IsUnlinked(); }

 private:
  friend class Critical;

  // Process slots and the segment lock (slots.cc).
  void ClaimSlot();
  void ReleaseSlot();
  void ReclaimDeadSlots();
  void ReclaimSlotLocked(uint32_t index);
  // True if an attached, live instance made '!' channels with this client id.
  bool IsClientAttached(std::string_view client) const;
  bool IsSlotAlive(uint32_t index) const;
  bool AnyOtherSlotAlive() const;
  void AbandonFailedOpen() noexcept;
  void CheckOpen() const;
  // The client part of '<prefix>.<client>!<random>', or empty for other names.
  static std::string_view ClientOf(std::string_view name);
  void LockSegment(LockOp op);
  void UnlockSegment();
  // The clock as read when the lock was taken (the hold time's start), in ms: an operation's
  // "now" under the lock. One reading serves both (each costs ~18 ns; send and receive read it
  // three times per call before).
  uint64_t LockedAtMs() const { return locked_at_ns_ / 1'000'000; }

  // Recovery (recovery.cc).
  void Recover();
  void RepairIfCorrupted() noexcept;

  // Channel records and their queues (queues.cc).
  uint32_t CapacityOf(std::string_view channel) const;
  // The capacity of an existing record: cached in it when its creator had our options.
  uint32_t CapacityOf(const Channel& record, std::string_view name) const;
  uint32_t EnsureChannel(std::string_view name);
  // A new record for a name the caller just looked up and did not find (no second lookup: a
  // '!' send makes its target's record on every message of a ping-pong, see FindSendTarget).
  uint32_t MakeChannel(std::string_view name);
  void MaybeReleaseChannel(uint32_t index);
  // Returns the messages that were still queued.
  uint32_t DropChannel(uint32_t index);
  void DropAllExpired(uint64_t now);
  // Throws kTooLarge for a message above the segment's maxMessageSize.
  void CheckMessageSize(uint32_t length) const;
  // TrySend() without the backoff after a refusal (backpressure.h): the work under the lock.
  SendOutcome SendOnce(std::string_view channel, const PayloadPiece* pieces, uint32_t count,
                       uint32_t length, uint32_t& capacity);
  uint32_t StoreBlock(const uint8_t* data, uint32_t length);
  uint32_t StorePieces(const PayloadPiece* pieces, uint32_t count, uint32_t length);
  uint32_t AllocateBlock(uint32_t length);  // throws kArenaFull with the numbers
  // SendOnce's steps: the channel's record (kNil: an orphaned '!' channel, counted), the
  // capacity check (throws kChannelFull), and the store and enqueue under the lock.
  SendTarget FindSendTarget(std::string_view channel);
  // Whether the target's queue holds its capacity (given in `capacity`); a refusal is counted and
  // unused records released. Expired heads are dropped first.
  bool IsFull(const SendTarget& to, std::string_view channel, uint64_t now, uint32_t& capacity);
  bool SendLocked(const SendTarget& to, const PayloadPiece* pieces, uint32_t count, uint32_t length,
                  uint64_t now);

  // Blocks held outside queues, payload.cc (the state machine is written down there).
  struct PinnedMessage {
    uint32_t entry;    // in our Slot::held
    uint32_t block;
    size_t at;         // where its payload goes in the batch's bytes
    uint32_t length;
    uint32_t checksum;
    uint32_t message;  // its index in the batch's length_of
    uint32_t node;     // the queued node phase 1 read it from
    bool held = false;  // phase 2 popped it into our hold (else it was not taken: damaged)
  };
  // On an exception out of Receive, the holds its phase 2 recorded go to stale_holds_.
  struct HoldsOnError {
    Layer& layer;
    std::vector<PinnedMessage>* pins;
    ~HoldsOnError() {
      if (!pins) return;
      for (const PinnedMessage& pin : *pins) {
        if (pin.held) layer.stale_holds_.push_back(pin.entry);
      }
    }
  };
  SendOutcome SendOutOfLock(std::string_view channel, const PayloadPiece* pieces, uint32_t count,
                            uint32_t length, uint32_t& capacity);
  // Copies pinned payloads out (no lock), then releases their holds (a short critical section).
  // The batch's payloads end up in `bytes`, or in the memory `placed.room` gives.
  void FinishPinned(std::vector<PinnedMessage>& pins, PayloadBytes& bytes,
                    PayloadPlacement& placed, std::vector<uint32_t>& length_of, LockOp op);
  // Receive's phase 1: a large, well-formed block with a free hold entry is left to copy after
  // the lock (room reserved in `bytes`, its length recorded); false: copy it now (CopyOut).
  bool LeaveForLater(uint32_t block, uint32_t node, PayloadBytes& bytes,
                     std::vector<uint32_t>& length_of, std::vector<PinnedMessage>& pins);
  uint32_t FreeHoldEntry() const;
  void DropHold(uint32_t slot_index, uint32_t entry);
  void ReleaseHolds(uint32_t slot_index);
  void ReleaseStaleHolds();
  void ReleaseBlockRef(uint32_t block);
  void ReleaseUnqueuedBlock(uint32_t block);
  uint32_t AllocateNode();
  void FreeNode(uint32_t index);
  // Appends a node referencing `block` to the channel; collects waiters to ring after unlock.
  // `target`, `deliveries`: Node's (an inbox node's target, and the member channels it is for).
  void Enqueue(uint32_t channel_index, uint32_t block, uint64_t expires_at,
               uint32_t target = kNil, uint32_t deliveries = 1);
  // Unlinks `head` (the channel's head node, read once by the caller), then releases its block
  // reference and frees it; returns its expiry. `fault_point` (0: none) lies between the unlink
  // and the release. `skip_invalid_block`: a block that fails its check is left to recovery
  // instead of reported as corruption (a receive, which counted it damaged already).
  // `hold_entry` < kHeldBlocks: the node's block reference moves to that entry of our slot's
  // holds instead of being released (payload.cc).
  uint64_t PopHead(Channel& channel, uint32_t head, int fault_point, bool skip_invalid_block,
                   uint32_t hold_entry = kNil);
  void DropHeadExpired(Channel& channel, uint64_t now);
  // Appends a queued block's payload to `bytes` and its length to `length_of`, checksummed as
  // it is copied (kDamagedMessage when that fails). False when the block header itself is
  // damaged: its pages are unaccounted for and recovery must follow (CountDamaged).
  bool CopyOut(uint32_t block, PayloadBytes& bytes, std::vector<uint32_t>& length_of);
  // A receive's commit: pops the `walked` nodes it passed from a channel's head (copied and
  // expired alike), then passes our wake-up on if messages are left.
  // `pins`: the walk's messages left to copy after the lock; their references become holds.
  void CommitWalk(uint32_t channel_index, uint32_t walked, uint64_t now,
                  std::vector<PinnedMessage>* pins = nullptr);
  void CountDamaged(const std::vector<uint32_t>& length_of, bool damaged_blocks);

  // Inboxes (queues.cc): the inbox name of a '<prefix>.<client>!<x>' channel, empty for others.
  static std::string_view InboxOf(std::string_view name);
  // Member channels a queued node stands for in the statistics (1 but for a group delivery).
  uint32_t DeliveriesOf(const Node& node) const;
  void MaybeReleaseTarget(const SendTarget& to);
  // A node naming `target` left its queue: the record loses that reference (and may go).
  void ReleaseTargetRef(uint32_t target);
  // Asks the CPU for the lines of a channel's head message (its node, or with `payload` the
  // start of its block) without waiting for them: a hint, never a read that is relied on.
  void PrefetchHead(uint32_t index, bool payload) const;
  // The same for writing, before our next send: the node and the pages it will likely take
  // (the free list's head, the page allocator's next fit), last written by a receiver's core.
  void PrefetchNextSend() const;
  // Drops the nodes of inbox `inbox` that are direct sends to `target`, or with `target` kNil
  // the group deliveries that no longer resolve to any channel (releaseChannel); returns the
  // deliveries dropped.
  uint32_t DropInboxEntries(uint32_t inbox, uint32_t target);
  // Receive of an inbox: appends the targets of a node (its target, seq and send time, read once
  // by the caller) to `out` (when given): the group members of ours that joined before it was
  // sent and had not expired by then, or its direct target; returns how many. Without `out`,
  // whether there is any (0 or 1): it stops at the first, so releaseChannel's look at every
  // group entry of an inbox does not walk each one's whole fan under the lock.
  uint32_t ResolveTargets(uint32_t inbox, uint32_t target, uint64_t seq, uint64_t sent_at,
                          ReceivedBatch* out);
  void AddTarget(uint32_t channel, ReceivedBatch& out);
  // Whether channel record `channel` is a '!' channel of inbox record `inbox` (by their names).
  bool IsOfInbox(uint32_t channel, uint32_t inbox) const;

  // Groups and memberships (groups.cc).
  uint32_t FindGroup(std::string_view name) const;
  // The group's record, made (with growth of the table) when there is none: `inserted` says so.
  uint32_t FindOrInsertGroup(std::string_view name, bool& inserted);
  void RemoveGroupIfEmpty(uint32_t group);
  uint32_t FindMember(uint32_t group, uint32_t channel) const;
  // The fan of (group, inbox): the record its '!' members hang off (layout.h kFanRecord).
  uint32_t FindFan(uint32_t group, uint32_t inbox) const;
  uint32_t FindInMemberHash(uint32_t group, uint32_t channel, uint32_t in_use) const;
  // A free member record (growing the table if need be), or kNil when none can be had.
  uint32_t TakeMemberRecord();
  // `fan`: the fan a '!' member joins (kNil: an ordinary member, in the group's own list).
  void LinkMember(uint32_t member, uint32_t group, uint32_t channel, uint64_t expires_at,
                  uint32_t fan);
  void LinkFan(uint32_t fan, uint32_t group, uint32_t inbox);
  // Counts a fan's unexpired members into its live_peers (and their earliest expiry).
  uint32_t CountLivePeers(uint32_t fan, uint64_t now);
  void RemoveFan(uint32_t fan);
  void LinkIntoGroupList(uint32_t member, Group& group);
  void UnlinkFromGroupList(const Member& member, Group& group);
  void UnlinkFromMemberHash(uint32_t member);
  void RemoveMember(uint32_t index);
  // Removes a membership and its group if that was the last one.
  void DropMembership(uint32_t index);

  // Waiters and doorbells (wakeups.cc).
  static bool HasWaiters(const Channel& channel);
  // Wakes a waiter of a channel that just got a message, noting the channel as ready in its slot:
  // one waiter, round robin (whoever takes a message and leaves some passes the wake-up on), or
  // every waiter when `all` (recovery). `except`: a slot not to pick (the caller's own).
  void WakeWaiters(Channel& channel, uint32_t channel_index, bool all = false,
                   uint32_t except = kNil);
  void NoteReady(uint32_t slot_index, uint32_t channel_index);
  // The channel still holds messages and has waiters: wake one other than `except`.
  void PassWakeupOn(Channel& channel, uint32_t channel_index, uint32_t except);
  // Withdraws this instance's wait on a channel, passing on a wake-up it may have been given.
  void WithdrawWait(uint32_t channel_index);
  void MarkAllReady();
  void RingPending() noexcept;

  LayerOptions options_;
  std::unique_ptr<Segment> segment_;
  std::unique_ptr<Doorbells> doorbells_;
  std::unique_ptr<Arena> arena_;
  uint32_t slot_ = kNil;
  uint32_t generation_ = 0;
  uint32_t lock_word_ = 0;     // what the lock word holds while this instance holds the lock
  uint32_t capacity_tag_ = 1;  // of options_.capacity and channel_capacity (Channel::capacity_tag)
  bool closed_ = false;
  uint64_t pending_ring_[kSlotMaskWords] = {};          // slots to ring once the lock is released
  uint64_t sent_at_last_maintain_ = ~uint64_t{0};       // messages_sent at our last housekeeping
  std::unordered_map<uint32_t, ChannelSetState> sets_;  // receiveAny channel sets
  // Receive()'s (channel, nodes to pop) list, kept between calls so a receive allocates nothing.
  std::vector<std::pair<uint32_t, uint32_t>> receive_pops_;
  // Receive()'s target channel record -> its index in the batch's name table (one call's).
  std::unordered_map<uint32_t, uint32_t> target_name_index_;
  LockHoldStats lock_hold_;
  RefusalBackoff backoff_;  // of Send(): yields the CPU on repeated refusals
  // The queue our last refusal found full, as it was: a retry loop asks RefusesAsFull() dozens of
  // times per message a receiver takes (a 5 MB stream: 30-60), and each lock taken is one more
  // chance to be descheduled holding it and stall every process. While its head is the same node
  // (same seq: nothing was taken), not expired, and the count still reaches the capacity, it is
  // still full: read without the lock, each field once and bounds-checked, a hint only (any
  // doubt takes the lock). Refusals answered so are counted at our next lock.
  struct FullQueue {
    std::string channel;
    uint32_t queue = kNil;
    uint32_t head = kNil;
    uint64_t head_seq = 0;
    uint32_t capacity = 0;
  };
  FullQueue last_full_;
  uint64_t uncounted_refusals_ = 0;
  void NoteFull(std::string_view channel, uint32_t queue, uint32_t capacity);
  bool StillFull(std::string_view channel) const;
  // Our Slot::held entries whose release could not get the lock: released by our next critical
  // section (payload.cc).
  std::vector<uint32_t> stale_holds_;
  LockOp lock_op_ = LockOp::kOther;  // of the critical section in progress
  uint64_t locked_at_ns_ = 0;
  uint32_t next_set_id_ = 1;
};

}  // namespace shmch
