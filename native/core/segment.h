// A named POSIX shared-memory segment: creation, attach, validation and typed, bounds-checked
// access to its regions. Knows nothing of queues or groups.
#pragma once

#include <cstdint>
#include <string>

#include "layout.h"

namespace shmch {

// One read of a field of shared memory that another process may change at any instant. Check and
// use the value returned, never the field again: the compiler may otherwise load it twice (it did,
// in Receive), and a check of the first load says nothing about the second.
template <typename T>
inline T LoadOnce(const T& field) {
  return __atomic_load_n(&field, __ATOMIC_RELAXED);
}

// A copy of a message block's header, each field read once, and whether the copy is well-formed.
struct BlockInfo {
  uint32_t pages = 0;
  uint32_t length = 0;
  uint32_t checksum = 0;
  uint32_t refcount = 0;
  bool valid = false;    // a well-formed block inside the arena
  bool message = false;  // and its length is one a message may have (<= maxMessageSize)
};

struct SegmentConfig {
  std::string name;  // layer name; the OS object is /shmch.<uid>.<name>
  // The most the segment may grow to; /dev/shm is used as messages and records need it.
  uint64_t size = 64ull << 20;
  uint32_t max_channels = 16384;
  uint32_t max_groups = 4096;
  uint32_t max_members = 65536;
  uint32_t max_nodes = 262144;
  uint32_t max_message_size = 16u << 20;
  uint32_t mode = 0600;
  bool allow_foreign = false;  // attach to a segment of another user or with a looser mode
  bool create = true;          // false: attach to an existing segment only (tools, inspection)
};

class Segment {
 public:
  // Creates the segment or attaches to the existing one. Concurrent openers serialise on an OFD
  // lock; whoever finds the segment uninitialised (new, or its creator died mid-way) initialises
  // it.
  explicit Segment(const SegmentConfig& config);
  ~Segment();
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  static std::string ObjectName(const std::string& layer_name);
  static void ValidateLayerName(const std::string& layer_name);
  // Instances attached to the layer's segment (slot liveness locks held, and one more while a
  // process is creating it), whatever its layout version; -1 when the segment does not exist.
  static int AttachedInstances(const std::string& layer_name);
  // Messages queued in the layer, read from its header without attaching or locking (for
  // listings: a snapshot); -1 if the segment is missing, not ready or of another layout.
  static int64_t PeekQueued(const std::string& layer_name);
  // Removes the segment name; processes still attached keep their mapping.
  static bool Unlink(const std::string& layer_name);

  Header& header() const { return *header_; }
  uint8_t* base() const { return base_; }
  uint64_t size() const { return size_; }
  int fd() const { return fd_; }
  const std::string& object_name() const { return object_name_; }
  bool created() const { return created_; }

  // Table sizes as read and checked at attach. Code must use these, never the header's fields:
  // a process that scribbles on the header must not widen a loop or an allocation.
  // `*_records()`: records that exist now (every loop and bounds check stops there; the tables
  // grow on demand up to `*_limit()`, the configured maximum).
  uint32_t channel_records() const { return channel_records_; }
  uint32_t channel_limit() const { return max_channels_; }
  uint32_t channel_buckets() const { return channel_buckets_count_; }
  uint32_t group_records() const { return group_records_; }
  uint32_t group_limit() const { return max_groups_; }
  uint32_t group_buckets() const { return group_buckets_count_; }
  uint32_t member_records() const { return member_records_; }
  uint32_t member_limit() const { return max_members_; }
  uint32_t member_buckets() const { return member_buckets_count_; }
  uint32_t node_records() const { return node_records_; }
  uint32_t node_limit() const { return max_nodes_; }
  uint32_t page_count() const { return page_count_; }
  uint32_t chunk_count() const { return chunk_count_; }
  uint32_t max_message_size() const { return max_message_size_; }

  // Memory on demand. Under the segment lock: adopts table growth published by other processes
  // (reserving it here too, so a forged count cannot make us touch unbacked pages).
  void SyncRecords();
  enum class Table { kChannels, kGroups, kMembers, kNodes };
  // Adds the next step of records to a table: reserved in /dev/shm, then published. Returns the
  // first new record, or kNil when the table is at its limit. Throws kNoSpace (with the numbers
  // and the way out) when /dev/shm cannot hold the step.
  uint32_t GrowTable(Table table);
  // Reserves [offset, offset + length) of the file: 0 or an errno (ENOSPC when /dev/shm is full).
  int Reserve(uint64_t offset, uint64_t length);
  // Gives the pages of a range back to /dev/shm (reads as zeros after).
  void Release(uint64_t offset, uint64_t length);
  uint64_t chunk_offset(uint32_t chunk) const {
    return arena_offset_ + uint64_t{chunk} * kChunkBytes;
  }
  uint64_t chunk_bytes(uint32_t chunk) const;
  ArenaChunk& chunk(uint32_t index) const;
  // Bytes of /dev/shm this segment occupies now (its allocated blocks).
  uint64_t ShmBytes() const;
  // Size of the file system holding the segment (/dev/shm), read at attach.
  uint64_t shm_total_bytes() const { return shm_total_bytes_; }
  // "/dev/shm has N MiB free of M MiB" for error messages.
  std::string SpaceReport() const;

  // Bounds-checked accessors: an index read from shared memory is never trusted.
  Slot& slot(uint32_t index) const;
  Channel& channel(uint32_t index) const;
  uint32_t& channel_bucket(uint32_t index) const;
  Group& group(uint32_t index) const;
  uint32_t& group_bucket(uint32_t index) const;
  Member& member(uint32_t index) const;
  uint32_t& member_bucket(uint32_t index) const;
  Node& node(uint32_t index) const;
  uint64_t* page_bitmap() const { return bitmap_; }
  uint8_t* page(uint32_t index) const;  // start of arena page `index`
  // A checked block header, for writing its refcount or checksum; read its fields with ReadBlock.
  BlockHeader& block(uint32_t first_page) const;

  // What a reader of an out-of-space error can do about it.
  static std::string SpaceAdvice();

  // Liveness of a slot's owner, through the OFD lock it holds on its slot byte. PID reuse and PID
  // namespaces cannot fool it: the kernel drops the lock when the owner's descriptor closes.
  bool TryLockSlotByte(uint32_t index);
  void UnlockSlotByte(uint32_t index);
  bool IsSlotHeld(uint32_t index) const;

  // The block header at `first_page`, read once and checked; never throws.
  BlockInfo ReadBlock(uint32_t first_page) const;
  bool IsValidBlock(uint32_t first_page) const { return ReadBlock(first_page).message; }
  // Like ReadBlock, but a damaged header throws kCorrupt.
  BlockInfo CheckedBlock(uint32_t first_page) const;

  // Throws Error kCorrupt and remembers that corruption was seen, so the lock holder repairs the
  // derived state before it lets anyone else in.
  [[noreturn]] void Corrupt(const std::string& what) const;
  bool TakeCorruptionSeen() {
    bool seen = corruption_seen_;
    corruption_seen_ = false;
    return seen;
  }

  // True when the name now refers to another segment or to nothing (someone unlinked ours).
  bool IsUnlinked() const;

 private:
  void InitializeLocked(const SegmentConfig& config, uint64_t current_size);
  bool AnySlotHeld() const;
  void ValidateLocked(const SegmentConfig& config);
  void Map(uint64_t size);
  void ComputeRegions(const Header& h);
  // Raises this process's record counts to `target`, reserving what it adds (see SyncRecords).
  void AdoptRecords(Table table, uint32_t target);
  uint64_t RecordOffset(Table table, uint32_t index) const;
  [[noreturn]] void OutOfBounds(const char* what, uint32_t index, uint32_t limit) const;
  // Record `index` of a table of `limit` records; an index from shared memory outside it is
  // reported as corruption, never followed.
  template <typename Record>
  Record& Checked(Record* table, uint32_t index, uint32_t limit, const char* what) const {
    if (index >= limit) OutOfBounds(what, index, limit);
    return table[index];
  }

  std::string object_name_;
  int fd_ = -1;
  uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  bool created_ = false;
  Header* header_ = nullptr;
  Slot* slots_ = nullptr;
  Channel* channels_ = nullptr;
  uint32_t* channel_buckets_ = nullptr;
  Group* groups_ = nullptr;
  uint32_t* group_buckets_ = nullptr;
  Member* members_ = nullptr;
  uint32_t* member_buckets_ = nullptr;
  Node* nodes_ = nullptr;
  uint64_t* bitmap_ = nullptr;
  uint8_t* arena_ = nullptr;
  // Copies of the table sizes taken at attach: a corrupted header cannot widen the bounds.
  uint32_t max_channels_ = 0, channel_buckets_count_ = 0, max_groups_ = 0, group_buckets_count_ = 0;
  uint32_t max_members_ = 0, member_buckets_count_ = 0, max_nodes_ = 0, page_count_ = 0;
  uint32_t max_message_size_ = 0;
  uint32_t channel_records_ = 0, group_records_ = 0, member_records_ = 0, node_records_ = 0;
  uint32_t chunk_count_ = 0;
  uint64_t shm_total_bytes_ = 0;
  ArenaChunk* chunks_ = nullptr;
  uint64_t arena_offset_ = 0;
  uint64_t dev_ = 0, ino_ = 0;
  mutable bool corruption_seen_ = false;
};

}  // namespace shmch
