// The byte layout of a shm-channels segment. Everything in here lives in shared memory, so it is
// plain data: fixed-size integers, indices instead of pointers, no constructors. Any process may
// have scribbled on it, so readers bounds-check every index before following it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace shmch {

constexpr uint64_t kMagic = 0x4e414843'4d485353ull;  // "SSHMCHAN" little-endian
constexpr uint32_t kLayoutVersion = 5;

constexpr uint32_t kNil = 0xffffffffu;  // "no index" in every linked structure
constexpr uint32_t kMaxSlots = 256;      // live layer instances attached at once
constexpr uint32_t kSlotMaskWords = kMaxSlots / 64;
constexpr uint32_t kMaxNameLength = 200;  // channel and group names, in bytes (ASCII)
constexpr uint32_t kMaxClientLength = 32;  // client id inside process-local channel names
constexpr uint32_t kReadyEntries = 62;     // per-slot list of channels that became ready
constexpr uint32_t kPageSize = 64;        // arena allocation unit: one cache line
// Message blocks one slot may hold outside any queue at once (payload.cc): a send's reserved
// block while it copies the payload in, a receive's popped blocks while it copies them out.
constexpr uint32_t kHeldBlocks = 8;
constexpr uint32_t kHeaderBytes = 64 * 1024;
// Page indices are 32-bit: the arena stays below 2^32 pages of kPageSize bytes.
constexpr uint64_t kMaxSegmentSize = 200ull << 30;
// Shared memory is reserved (fallocate) as it is needed and given back (punched) when freed:
// the arena in chunks of this many bytes, the record tables in steps of about kTableStepBytes.
constexpr uint32_t kChunkBytes = 1u << 20;
constexpr uint32_t kChunkPages = kChunkBytes / kPageSize;
constexpr uint32_t kTableStepBytes = 256u << 10;
// Regions that are reserved in steps start on this boundary, so reserving or punching one never
// touches a neighbour's pages (64 KiB covers every Linux page size on x64 and arm64).
constexpr uint64_t kRegionAlign = 64u << 10;

// State of the segment as a whole (Header::state).
enum SegmentState : uint32_t { kInitializing = 0, kReady = 1 };

// A lock that survives its owner's death. `word` is 0 when free, else names the holder's slot and
// that slot's incarnation (shared_lock.h). Waiters sleep on the futex word with a timeout and,
// when the owner looks stuck, probe its slot's liveness (an OFD lock the kernel drops when the
// holder's file description closes).
struct SharedLock {
  std::atomic<uint32_t> word;
  // 1 while derived state must be rebuilt by the next holder: set before a recovery starts and
  // cleared when it completes, so a recovery that failed (or died) is redone.
  std::atomic<uint32_t> recovery_pending;
  std::atomic<uint32_t> recoveries;  // times a dead owner's lock was taken over
  uint32_t pad;
};

// One attached layer instance (a process, or a worker thread with its own layer).
struct Slot {
  std::atomic<uint32_t> state;     // 0 free, 1 attached
  std::atomic<uint32_t> bell;      // 1 when someone rang since the owner last looked
  std::atomic<uint32_t> sleeping;  // 1 while the owner sleeps on its doorbell FIFO ("armed")
  // Bumped on every claim: the lock word names the holder's incarnation by it, so a word written
  // by an earlier owner of the slot never looks like the current owner's.
  uint32_t generation;
  int32_t pid;                     // informational only: liveness never relies on it
  uint32_t client_length;
  uint64_t attached_at_ms;
  // The instance's newChannel() client id: its '!' channels are named '<prefix>.<client>!<rand>'
  // and are reclaimed with the slot.
  char client[kMaxClientLength];
  // Channels whose messages rang this slot since its owner last looked, so a process with ten
  // thousand waiting receives looks at the few that have something. Written under the lock.
  uint32_t ready_count;
  uint32_t ready_overflow;  // more became ready than fit: the owner looks at every channel
  uint32_t ready[kReadyEntries];
  // Blocks this slot holds a reference to outside any queue (payload.cc), as first page + 1; 0 is
  // free, so a zeroed slot holds nothing. Primary data, written under the lock by the owner:
  // recovery counts the holds of attached slots into refcounts, and reclaiming a dead slot
  // releases them, so a block reserved or popped by a process that died is freed.
  uint32_t held[kHeldBlocks];
};

struct Channel {
  uint32_t in_use;  // written last on creation: a half-created record is free
  uint32_t name_length;
  uint32_t hash;
  uint32_t next_in_bucket;  // derived: rebuilt by recovery
  uint32_t head;            // first queued node, kNil when empty
  uint32_t tail;            // derived from head by recovery
  uint32_t count;           // derived from head by recovery
  uint32_t memberships;     // derived: group members that reference this channel
  uint64_t waiters[kSlotMaskWords];  // slots whose receivers sleep until this channel gets a message
  char name[kMaxNameLength];
  uint32_t wake_rover;  // the waiter woken last: the next message wakes the one after it
  // The channel's capacity as its creator's options gave it (channelCapacity globs): low 24 bits
  // the capacity, high 8 bits a check of it and of those options (layer.cc CachedCapacity). A
  // process with the same options uses it instead of matching the globs again (groupSend to
  // 10,000 members did 10,000 fnmatch calls under the lock); any other recomputes. A hint only.
  uint32_t cached_capacity;
  // Derived: inbox nodes that name this '!' channel as the target of a direct send (they keep
  // the record, so a queued node never names a record reused by another channel).
  uint32_t inbox_refs;
  uint32_t pad;
};

struct Group {
  uint32_t in_use;
  uint32_t name_length;
  uint32_t hash;
  uint32_t next_in_bucket;  // derived
  uint32_t first_member;    // derived
  uint32_t member_count;    // derived
  char name[kMaxNameLength];
  uint8_t pad[8];
};

// Member::in_use of a fan record (derived): the '!' members of one group that share one inbox,
// so a group send makes one inbox node per process instead of touching each member. A fan's
// expires_at_ms is the earliest expiry among its unexpired members (see live_peers).
constexpr uint32_t kFanRecord = 2;

// A (group, channel) pair. Primary data is in_use/group/channel/expiry/added_seq; the links are
// derived. A member whose channel has an inbox ('<prefix>.<client>!<x>') is not in its group's
// list: it hangs off the fan of (group, inbox), which is (with in_use kFanRecord, `channel` the
// inbox record, no expiry); the group's list holds ordinary members and fans. Fans are in the
// member hash under (group, inbox) and are rebuilt by recovery from the '!' members.
struct Member {
  uint32_t in_use;
  uint32_t group;
  uint32_t channel;
  uint32_t next_in_group;  // derived
  uint32_t prev_in_group;  // derived
  uint32_t next_in_hash;   // derived
  uint64_t expires_at_ms;
  // Header::next_seq when the membership was made: a group delivery in an inbox reaches the
  // members that joined before it was sent (added_seq <= Node::seq), so a member added later, or
  // a group record reused after the group emptied, never receives an older message.
  uint64_t added_seq;
  uint32_t fan;         // derived: a '!' member's fan record, else kNil
  uint32_t next_peer;   // derived: a fan's first '!' member; a member's next one in its fan
  uint32_t prev_peer;   // derived: a member's previous one in its fan (kNil: the first)
  uint32_t peer_count;  // derived: a fan's members
  // Derived, of a fan: its members unexpired when last counted, and (in expires_at_ms) the
  // earliest expiry among them; a group send that finds that passed counts again, so its count
  // of channels reached is exact without looking at each member every time. 0: count again.
  uint32_t live_peers;
  uint32_t pad;
};

// Node::target of a group delivery: this bit and the group record. Without it, the target is
// the '!' channel record of a direct send; kNil: a message of the queue's own channel.
constexpr uint32_t kGroupTarget = 0x80000000u;

// One queued delivery: a reference from a channel's queue to a message block.
struct Node {
  uint32_t next;
  uint32_t block;  // first page of the message block
  uint64_t expires_at_ms;
  // Enqueue order across the whole segment (from Header::next_seq): receiveAny takes the oldest
  // head among several channels. Only compared, never used as an index.
  uint64_t seq;
  // In an inbox ('<prefix>.<client>!'): what the message is for (kGroupTarget above), resolved
  // by the owner's receive. Checked before use like every index read from shared memory.
  uint32_t target;
  // Member channels a group delivery was counted for when sent (stats count deliveries); 1
  // otherwise.
  uint32_t deliveries;
  // When it was sent: a group delivery reaches the members that had not expired by then.
  uint64_t sent_at_ms;
};

// One arena chunk (kChunkPages pages). `committed` is 1 while the chunk's bytes are reserved in
// /dev/shm: set only after fallocate succeeded, cleared before the hole is punched, so a chunk
// marked committed is always backed (a crash in between leaks a reservation, never a SIGBUS).
// `used_pages` is derived from the page bitmap and rebuilt by recovery.
struct ArenaChunk {
  uint32_t used_pages;
  uint32_t committed;
};

// The first bytes of a message block in the arena; the payload follows.
struct BlockHeader {
  uint32_t magic;     // kBlockMagic while allocated
  uint32_t refcount;  // derived: queued nodes that reference this block
  uint32_t pages;
  uint32_t length;    // payload bytes
  uint32_t checksum;  // CRC-32C of the payload
  uint32_t pad[3];
};
constexpr uint32_t kBlockMagic = 0x4b4c4253;  // "SBLK"

struct Header {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t abi_tag;
  std::atomic<uint32_t> state;
  uint32_t pad0;
  uint64_t segment_size;

  // Table sizes, fixed at creation.
  uint32_t max_channels;
  uint32_t channel_buckets;  // power of two
  uint32_t max_groups;
  uint32_t group_buckets;
  uint32_t max_members;
  uint32_t member_buckets;
  uint32_t max_nodes;
  uint32_t page_count;
  uint32_t max_message_size;
  uint32_t pad1;

  // Region offsets from the segment start.
  uint64_t slots_offset;
  uint64_t channels_offset;
  uint64_t channel_buckets_offset;
  uint64_t groups_offset;
  uint64_t group_buckets_offset;
  uint64_t members_offset;
  uint64_t member_buckets_offset;
  uint64_t nodes_offset;
  uint64_t page_bitmap_offset;
  uint64_t chunks_offset;
  uint64_t arena_offset;
  uint64_t fixed_bytes;  // [0, fixed_bytes) is reserved at creation; tables and arena grow after

  // Records that exist (reserved and initialised) in each table; they only grow, each step
  // reserved before it is published here. Records past these counts are never touched.
  uint32_t channel_records;
  uint32_t group_records;
  uint32_t member_records;
  uint32_t node_records;
  uint32_t chunk_count;

  // The lock alone on its cache line: a waiter spinning on the word reads the line while the
  // holder works, and would otherwise take away the lines the holder is writing.
  alignas(64) SharedLock lock;

  // What every send and receive writes under the lock, together on one cache line: it moves to
  // the next holder's core once per operation. (Spread over four lines, with the lock word, a
  // message crossing processes cost each side ~250 ns more under the lock than in one process:
  // the lines bounced one by one.) The allocator state here is derived (rebuilt by recovery),
  // kept here for speed.
  alignas(64) uint32_t free_node;  // head of the node free list, linked through Node::next
  uint32_t free_nodes;  // how many nodes are on it
  uint32_t page_rover;  // next-fit hint for the page allocator
  uint32_t used_pages;
  uint32_t peak_used_pages;   // most pages in use since the layer was last idle (sizes the reserve)
  uint32_t committed_chunks;  // derived: chunks with committed == 1
  uint32_t empty_chunks;      // derived: committed chunks with no used page
  uint32_t pad2;
  uint64_t messages_sent;
  uint64_t messages_received;
  // Sequence number of the next queued node (Node::seq). Recovery keeps it above every queued
  // node's, so a scribbled value cannot make new messages look older than queued ones for long.
  uint64_t next_seq;
  uint64_t messages_expired;

  // Written by rarer operations: records made and released, flush, counters of what went amiss.
  alignas(64) uint32_t channels_used;
  uint32_t groups_used;
  uint32_t members_used;
  uint32_t channel_rover;  // where to look for the next free channel record
  uint32_t group_rover;
  uint32_t member_rover;
  uint64_t flush_epoch;  // bumped by flush(), so sleeping receivers re-register
  uint32_t fans_used;        // derived: member records that are fans (kFanRecord)
  uint32_t pad3;

  uint64_t messages_damaged;  // dropped at receive: bad block header or checksum

  // Deliveries the layer did not make, so an operator can tell where messages went.
  uint64_t deliveries_skipped_full;  // groupSend members passed over: channel or segment full
  uint64_t sends_refused_full;       // send() refused with ChannelFull (the caller was told)
  uint64_t messages_orphaned;        // for a '!' channel whose instance is gone or released it

  // When some process last swept the whole segment for expired memberships and messages: one
  // process per interval does it, not every process every interval.
  uint64_t expiry_swept_at_ms;
};

// Changes whenever a shared struct changes size, so two builds that disagree on the layout refuse
// to share a segment even if someone forgot to bump kLayoutVersion.
constexpr uint32_t kAbiTag =
    static_cast<uint32_t>(sizeof(Header) * 1u + sizeof(Slot) * 3u + sizeof(Channel) * 7u +
                          sizeof(Group) * 11u + sizeof(Member) * 13u + sizeof(Node) * 17u +
                          sizeof(BlockHeader) * 19u + kMaxSlots * 23u + kPageSize * 29u +
                          sizeof(ArenaChunk) * 31u + kChunkBytes / 4096u * 37u) ^
    0x5c0ffee5u;

static_assert(sizeof(Header) <= kHeaderBytes, "header must fit its reserved area");
static_assert(offsetof(Header, free_node) / 64 == offsetof(Header, messages_expired) / 64 &&
                  offsetof(Header, free_node) % 64 == 0,
              "the fields every send and receive writes share one cache line");
static_assert(offsetof(Header, lock) % 64 == 0 && sizeof(SharedLock) <= 64,
              "the lock word has its cache line to itself");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "shared atomics must be lock-free");
static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared atomics must be lock-free");
static_assert(sizeof(BlockHeader) == 32, "block header is part of the layout");

}  // namespace shmch
