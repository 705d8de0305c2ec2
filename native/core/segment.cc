#include "segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>

#include "errors.h"
#include "fault_points.h"

namespace shmch {

namespace {

// Byte offsets (beyond any real data; fcntl locks may lie past EOF) used only as OFD lock keys.
constexpr off_t kInitLockByte = off_t{1} << 40;
constexpr off_t kSlotLockBase = kInitLockByte + 4096;

constexpr uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

uint32_t NextPowerOfTwo(uint32_t v) {
  uint32_t p = 1;
  while (p < v && p < (1u << 30)) p <<= 1;
  return p;
}

// Sets an OFD lock; returns false if another description holds a conflicting one (non-blocking).
bool OfdLock(int fd, short type, off_t start, bool wait) {
  struct flock fl;
  std::memset(&fl, 0, sizeof fl);
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = 1;
  for (;;) {
    if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) return true;
    if (errno == EINTR) continue;
    if (!wait && (errno == EAGAIN || errno == EACCES)) return false;
    ThrowSystemError("fcntl(F_OFD_SETLK)", errno);
  }
}

class InitLockGuard {
 public:
  explicit InitLockGuard(int fd) : fd_(fd) { OfdLock(fd_, F_WRLCK, kInitLockByte, true); }
  ~InitLockGuard() { OfdLock(fd_, F_UNLCK, kInitLockByte, false); }

 private:
  int fd_;
};

// Layout of the regions for given table sizes; returns false on overflow or if they do not fit.
// [0, fixed_bytes): header, slots, hash buckets, page bitmap and chunk table, reserved at
// creation. Then the record tables and the arena, each on a kRegionAlign boundary, reserved in
// steps as they are used.
bool PlanRegions(Header& h, uint64_t size) {
  uint64_t off = kHeaderBytes;
  auto take = [&](uint64_t& field, uint64_t bytes, uint64_t align) {
    off = AlignUp(off, align);
    field = off;
    off += bytes;
  };
  if (h.max_channels == 0 || h.max_groups == 0 || h.max_members == 0 || h.max_nodes == 0)
    return false;
  if (h.max_channels >= kNil || h.max_groups >= kNil || h.max_members >= kNil ||
      h.max_nodes >= kNil)
    return false;
  take(h.slots_offset, uint64_t{kMaxSlots} * sizeof(Slot), 64);
  take(h.channel_buckets_offset, uint64_t{h.channel_buckets} * 4, 64);
  take(h.group_buckets_offset, uint64_t{h.group_buckets} * 4, 64);
  take(h.member_buckets_offset, uint64_t{h.member_buckets} * 4, 64);
  const uint64_t before_bitmap = off;
  const uint64_t tables = AlignUp(uint64_t{h.max_channels} * sizeof(Channel), kRegionAlign) +
                          AlignUp(uint64_t{h.max_groups} * sizeof(Group), kRegionAlign) +
                          AlignUp(uint64_t{h.max_members} * sizeof(Member), kRegionAlign) +
                          AlignUp(uint64_t{h.max_nodes} * sizeof(Node), kRegionAlign);
  const uint64_t slack = 3 * kRegionAlign + 256;  // alignment padding around the regions
  if (before_bitmap + tables + slack >= size) return false;
  // Each page costs kPageSize bytes, one bitmap bit and its share of a chunk record.
  uint64_t pages = (size - before_bitmap - tables - slack) * kChunkPages /
                   (uint64_t{kChunkPages} * kPageSize + kChunkPages / 8 + sizeof(ArenaChunk));
  pages = pages / 64 * 64;
  for (;; pages -= 64) {
    if (pages < 64 || pages >= kNil) return false;
    off = before_bitmap;
    h.page_count = static_cast<uint32_t>(pages);
    h.chunk_count = static_cast<uint32_t>((pages + kChunkPages - 1) / kChunkPages);
    take(h.page_bitmap_offset, pages / 8, 64);
    take(h.chunks_offset, uint64_t{h.chunk_count} * sizeof(ArenaChunk), 64);
    off = AlignUp(off, kRegionAlign);
    h.fixed_bytes = off;
    take(h.channels_offset, uint64_t{h.max_channels} * sizeof(Channel), kRegionAlign);
    take(h.groups_offset, uint64_t{h.max_groups} * sizeof(Group), kRegionAlign);
    take(h.members_offset, uint64_t{h.max_members} * sizeof(Member), kRegionAlign);
    take(h.nodes_offset, uint64_t{h.max_nodes} * sizeof(Node), kRegionAlign);
    take(h.arena_offset, pages * kPageSize, kRegionAlign);
    if (off <= size) return true;
  }
}

std::string Mib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

}  // namespace

std::string Segment::ObjectName(const std::string& layer_name) {
  return "/shmch." + std::to_string(geteuid()) + "." + layer_name;
}

void Segment::ValidateLayerName(const std::string& name) {
  if (name.empty() || name.size() > 100) {
    throw Error(ErrorCode::kInvalidArgument, "layer name must be 1 to 100 characters");
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) {
      throw Error(ErrorCode::kInvalidArgument,
                  "layer name may contain only ASCII letters, digits, '-', '_' and '.': " + name);
    }
  }
}

int Segment::AttachedInstances(const std::string& layer_name) {
  ValidateLayerName(layer_name);
  std::string object = ObjectName(layer_name);
  int fd = shm_open(object.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) {
    if (errno == ENOENT) return -1;
    ThrowSystemError("shm_open(" + object + ")", errno);
  }
  int count = 0;
  for (uint32_t i = 0; i <= kMaxSlots; ++i) {
    // The slots' liveness locks, and the init lock: a process creating the segment right now
    // holds that before it has a slot.
    off_t byte = i < kMaxSlots ? kSlotLockBase + i : kInitLockByte;
    struct flock fl;
    std::memset(&fl, 0, sizeof fl);
    fl.l_type = F_RDLCK;  // a read-only descriptor may test for any conflicting lock this way
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    if (fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) ++count;
  }
  close(fd);
  return count;
}

int64_t Segment::PeekQueued(const std::string& layer_name) {
  ValidateLayerName(layer_name);
  std::string object = ObjectName(layer_name);
  int fd = shm_open(object.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct stat st;
  int64_t queued = -1;
  if (fstat(fd, &st) == 0 && st.st_size >= static_cast<off_t>(kHeaderBytes)) {
    void* p = mmap(nullptr, kHeaderBytes, PROT_READ, MAP_SHARED, fd, 0);
    if (p != MAP_FAILED) {
      const Header& h = *static_cast<const Header*>(p);
      if (h.magic == kMagic && h.layout_version == kLayoutVersion && h.abi_tag == kAbiTag &&
          h.state.load(std::memory_order_acquire) == kReady) {
        uint32_t records = h.node_records < h.max_nodes ? h.node_records : h.max_nodes;
        uint32_t free_nodes = h.free_nodes < records ? h.free_nodes : records;
        queued = records - free_nodes;
      }
      munmap(p, kHeaderBytes);
    }
  }
  close(fd);
  return queued;
}

bool Segment::Unlink(const std::string& layer_name) {
  ValidateLayerName(layer_name);
  return shm_unlink(ObjectName(layer_name).c_str()) == 0;
}

Segment::Segment(const SegmentConfig& config) {
  ValidateLayerName(config.name);
  object_name_ = ObjectName(config.name);
  if (!config.create) {
    fd_ = shm_open(object_name_.c_str(), O_RDWR | O_CLOEXEC, 0);
    if (fd_ < 0 && errno == ENOENT) {
      throw Error(ErrorCode::kNotFound,
                  "no layer named '" + config.name + "' (" + object_name_ + " does not exist)");
    }
    if (fd_ < 0) ThrowSystemError("shm_open(" + object_name_ + ")", errno);
  }
  for (int attempt = 0; fd_ < 0; ++attempt) {
    fd_ = shm_open(object_name_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, config.mode & 0777);
    if (fd_ >= 0) {
      created_ = true;
      // The umask may have narrowed the mode; set exactly what was asked.
      fchmod(fd_, config.mode & 0777);
      break;
    }
    if (errno != EEXIST) ThrowSystemError("shm_open(" + object_name_ + ")", errno);
    fd_ = shm_open(object_name_.c_str(), O_RDWR | O_CLOEXEC, 0);
    if (fd_ < 0 && errno != ENOENT) ThrowSystemError("shm_open(" + object_name_ + ")", errno);
    if (attempt > 100) throw Error(ErrorCode::kSystem, "segment keeps vanishing: " + object_name_);
  }
  try {
    struct stat st;
    if (fstat(fd_, &st) != 0) ThrowSystemError("fstat", errno);
    if (!config.allow_foreign) {
      if (st.st_uid != geteuid()) {
        throw Error(ErrorCode::kPermission, "segment " + object_name_ + " belongs to uid " +
                                                std::to_string(st.st_uid) + ", not to this user");
      }
      if ((st.st_mode & 0077) != (config.mode & 0077)) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "segment %s has mode %04o, expected %04o",
                      object_name_.c_str(), st.st_mode & 0777, config.mode & 0777);
        throw Error(ErrorCode::kPermission, buf);
      }
    }
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    InitLockGuard guard(fd_);
    if (fstat(fd_, &st) != 0) ThrowSystemError("fstat", errno);
    bool ready = false;
    if (st.st_size >= static_cast<off_t>(kHeaderBytes)) {
      Map(static_cast<uint64_t>(st.st_size));
      ready = header_->state.load(std::memory_order_acquire) == kReady;
      if (!ready && !created_ && AnySlotHeld()) {
        // Slots are claimed only on a ready segment, so a live one proves it was initialised:
        // only the state word was damaged. Initialising again would wipe the live processes'
        // data (and a shrinking ftruncate would SIGBUS them); the header is validated below.
        header_->state.store(kReady, std::memory_order_release);
        ready = true;
      }
      if (!ready) {
        munmap(base_, size_);
        base_ = nullptr;
      }
    }
    if (ready) {
      ValidateLocked(config);
    } else if (!config.create) {
      throw Error(ErrorCode::kNotFound, "layer '" + config.name + "' is not initialised");
    } else {
      // Ours from O_EXCL, or a creator died initialising it and nobody is attached (no slot
      // held, and every other opener waits for the init lock we hold): nobody has it mapped.
      InitializeLocked(config, static_cast<uint64_t>(st.st_size));
    }
  } catch (...) {
    if (base_) munmap(base_, size_);
    close(fd_);
    if (created_) shm_unlink(object_name_.c_str());
    throw;
  }
}

Segment::~Segment() {
  if (base_) munmap(base_, size_);
  if (fd_ >= 0) close(fd_);
}

void Segment::Map(uint64_t size) {
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED) ThrowSystemError("mmap", errno);
  base_ = static_cast<uint8_t*>(p);
  size_ = size;
  header_ = reinterpret_cast<Header*>(base_);
}

bool Segment::AnySlotHeld() const {
  for (uint32_t i = 0; i < kMaxSlots; ++i) {
    if (IsSlotHeld(i)) return true;
  }
  return false;
}

void Segment::InitializeLocked(const SegmentConfig& config, uint64_t current_size) {
  Header plan;
  std::memset(static_cast<void*>(&plan), 0, sizeof plan);
  plan.max_channels = config.max_channels;
  plan.channel_buckets = NextPowerOfTwo(config.max_channels);
  plan.max_groups = config.max_groups;
  plan.group_buckets = NextPowerOfTwo(config.max_groups);
  plan.max_members = config.max_members;
  plan.member_buckets = NextPowerOfTwo(config.max_members);
  plan.max_nodes = config.max_nodes;
  if (config.size > kMaxSegmentSize) {
    throw Error(ErrorCode::kInvalidArgument, "segment size " + std::to_string(config.size) +
                                                 " is above the maximum of " +
                                                 std::to_string(kMaxSegmentSize) + " bytes");
  }
  if (config.size < kHeaderBytes || !PlanRegions(plan, config.size)) {
    throw Error(ErrorCode::kInvalidArgument,
                "segment size " + std::to_string(config.size) +
                    " is too small for the configured tables (channels, groups, members, nodes)");
  }
  uint64_t arena_bytes = uint64_t{plan.page_count} * kPageSize;
  if (config.max_message_size == 0 || config.max_message_size + sizeof(BlockHeader) > arena_bytes) {
    throw Error(ErrorCode::kInvalidArgument,
                "maxMessageSize " + std::to_string(config.max_message_size) +
                    " does not fit the message arena of " + std::to_string(arena_bytes) + " bytes");
  }
  // The file is sparse: only [0, fixed_bytes) is reserved now, the tables and the arena as they
  // are used. A full /dev/shm fails here or at the call that needs more, never with SIGBUS.
  // Emptied first so everything reads as zero. Only a file nobody is attached to gets here (the
  // caller re-initialises a non-ready segment only when no slot is held): a fresh one (size 0),
  // or one whose creator died initialising it.
  if ((current_size != 0 && ftruncate(fd_, 0) != 0) ||
      ftruncate(fd_, static_cast<off_t>(config.size)) != 0) {
    ThrowSystemError("ftruncate(" + object_name_ + ")", errno);
  }
  int err = Reserve(0, plan.fixed_bytes);
  if (err != 0) {
    ftruncate(fd_, 0);
    if (err == ENOSPC) {
      throw Error(ErrorCode::kNoSpace,
                  "cannot create layer '" + config.name + "': it needs " + Mib(plan.fixed_bytes) +
                      " of /dev/shm to open (and grows as messages queue, up to its size of " +
                      Mib(config.size) + "), but " + SpaceReport() + ". " + SpaceAdvice());
    }
    ThrowSystemError("fallocate(" + object_name_ + ")", err);
  }
  Map(config.size);
  std::memset(base_, 0, kHeaderBytes);
  Header& h = *header_;
  std::memcpy(static_cast<void*>(&h), &plan, sizeof plan);
  h.magic = kMagic;
  h.layout_version = kLayoutVersion;
  h.abi_tag = kAbiTag;
  h.segment_size = config.size;
  h.max_message_size = config.max_message_size;
  ComputeRegions(h);
  // The file was truncated to nothing first, so everything reads as zero already; the tables
  // and the arena stay untouched (unreserved) until they are needed.
  for (uint32_t i = 0; i < h.channel_buckets; ++i) channel_buckets_[i] = kNil;
  for (uint32_t i = 0; i < h.group_buckets; ++i) group_buckets_[i] = kNil;
  for (uint32_t i = 0; i < h.member_buckets; ++i) member_buckets_[i] = kNil;
  h.free_node = kNil;
  h.free_nodes = 0;
  FAULT_POINT(9);  // the creator dies before the segment is ready
  h.state.store(kReady, std::memory_order_release);
}

void Segment::ValidateLocked(const SegmentConfig& config) {
  (void)config;
  const Header& h = *header_;
  if (h.magic != kMagic) {
    throw Error(ErrorCode::kVersionMismatch,
                "segment " + object_name_ + " is not a shm-channels segment (bad magic)");
  }
  if (h.layout_version != kLayoutVersion || h.abi_tag != kAbiTag) {
    throw Error(ErrorCode::kVersionMismatch,
                "segment " + object_name_ + " has layout version " +
                    std::to_string(h.layout_version) + " (ABI tag " + std::to_string(h.abi_tag) +
                    "), this build uses layout version " + std::to_string(kLayoutVersion) +
                    " (ABI tag " + std::to_string(kAbiTag) +
                    "); destroy it or run matching versions of shm-channels");
  }
  if (h.segment_size != size_) {
    throw Error(ErrorCode::kCorrupt, "segment " + object_name_ + " header size " +
                                         std::to_string(h.segment_size) +
                                         " differs from file size " + std::to_string(size_));
  }
  Header check;
  std::memset(static_cast<void*>(&check), 0, sizeof check);
  check.max_channels = h.max_channels;
  check.channel_buckets = h.channel_buckets;
  check.max_groups = h.max_groups;
  check.group_buckets = h.group_buckets;
  check.max_members = h.max_members;
  check.member_buckets = h.member_buckets;
  check.max_nodes = h.max_nodes;
  bool buckets_ok = h.channel_buckets == NextPowerOfTwo(h.max_channels) &&
                    h.group_buckets == NextPowerOfTwo(h.max_groups) &&
                    h.member_buckets == NextPowerOfTwo(h.max_members);
  if (!buckets_ok || !PlanRegions(check, size_) || check.page_count != h.page_count ||
      check.arena_offset != h.arena_offset || check.nodes_offset != h.nodes_offset ||
      check.channels_offset != h.channels_offset || check.members_offset != h.members_offset ||
      check.groups_offset != h.groups_offset || check.chunks_offset != h.chunks_offset ||
      check.chunk_count != h.chunk_count || check.fixed_bytes != h.fixed_bytes ||
      check.page_bitmap_offset != h.page_bitmap_offset || h.max_message_size == 0 ||
      uint64_t{h.max_message_size} + sizeof(BlockHeader) > uint64_t{h.page_count} * kPageSize) {
    throw Error(ErrorCode::kCorrupt, "segment " + object_name_ + " has an inconsistent header");
  }
  ComputeRegions(h);
  AdoptRecords(Table::kChannels, h.channel_records);
  AdoptRecords(Table::kGroups, h.group_records);
  AdoptRecords(Table::kMembers, h.member_records);
  AdoptRecords(Table::kNodes, h.node_records);
}

void Segment::ComputeRegions(const Header& h) {
  max_channels_ = h.max_channels;
  channel_buckets_count_ = h.channel_buckets;
  max_groups_ = h.max_groups;
  group_buckets_count_ = h.group_buckets;
  max_members_ = h.max_members;
  member_buckets_count_ = h.member_buckets;
  max_nodes_ = h.max_nodes;
  page_count_ = h.page_count;
  max_message_size_ = h.max_message_size;
  slots_ = reinterpret_cast<Slot*>(base_ + h.slots_offset);
  channels_ = reinterpret_cast<Channel*>(base_ + h.channels_offset);
  channel_buckets_ = reinterpret_cast<uint32_t*>(base_ + h.channel_buckets_offset);
  groups_ = reinterpret_cast<Group*>(base_ + h.groups_offset);
  group_buckets_ = reinterpret_cast<uint32_t*>(base_ + h.group_buckets_offset);
  members_ = reinterpret_cast<Member*>(base_ + h.members_offset);
  member_buckets_ = reinterpret_cast<uint32_t*>(base_ + h.member_buckets_offset);
  nodes_ = reinterpret_cast<Node*>(base_ + h.nodes_offset);
  bitmap_ = reinterpret_cast<uint64_t*>(base_ + h.page_bitmap_offset);
  chunks_ = reinterpret_cast<ArenaChunk*>(base_ + h.chunks_offset);
  chunk_count_ = h.chunk_count;
  arena_offset_ = h.arena_offset;
  struct statvfs fs;
  shm_total_bytes_ = fstatvfs(fd_, &fs) == 0 ? uint64_t{fs.f_blocks} * fs.f_frsize : 0;
  arena_ = base_ + h.arena_offset;
  channel_records_ = group_records_ = member_records_ = node_records_ = 0;
}

uint64_t Segment::RecordOffset(Table table, uint32_t index) const {
  const Header& h = *header_;
  // One line per table reads as a table.
  // clang-format off
  switch (table) {
    case Table::kChannels: return h.channels_offset + uint64_t{index} * sizeof(Channel);
    case Table::kGroups: return h.groups_offset + uint64_t{index} * sizeof(Group);
    case Table::kMembers: return h.members_offset + uint64_t{index} * sizeof(Member);
    case Table::kNodes: return h.nodes_offset + uint64_t{index} * sizeof(Node);
  }
  // clang-format on
  return 0;
}

void Segment::AdoptRecords(Table table, uint32_t target) {
  uint32_t* local = nullptr;
  uint32_t limit = 0;
  // One line per table reads as a table.
  // clang-format off
  switch (table) {
    case Table::kChannels: local = &channel_records_; limit = max_channels_; break;
    case Table::kGroups: local = &group_records_; limit = max_groups_; break;
    case Table::kMembers: local = &member_records_; limit = max_members_; break;
    case Table::kNodes: local = &node_records_; limit = max_nodes_; break;
  }
  // clang-format on
  if (target > limit) target = limit;
  if (target <= *local) return;
  // Whoever published the count reserved these records first; reserving again costs nothing
  // then, and protects us from a count that was forged without the reservation.
  uint64_t from = RecordOffset(table, *local);
  int err = Reserve(from, RecordOffset(table, target) - from);
  if (err != 0) {
    throw Error(ErrorCode::kNoSpace, "cannot back the records of " + object_name_ + ": " +
                                         SpaceReport() + ". " + SpaceAdvice());
  }
  *local = target;
}

void Segment::SyncRecords() {
  Header& h = *header_;
  struct Field {
    uint32_t& shared;
    Table table;
    uint32_t& local;
  };
  Field fields[] = {{h.channel_records, Table::kChannels, channel_records_},
                    {h.group_records, Table::kGroups, group_records_},
                    {h.member_records, Table::kMembers, member_records_},
                    {h.node_records, Table::kNodes, node_records_}};
  for (Field& f : fields) {
    uint32_t published = f.shared;  // read once: the copy is what we check and use
    // Every lock takes this path; the tables rarely grow, so the common case is one compare.
    if (published > f.local) AdoptRecords(f.table, published);
    // Counts only grow; a smaller one was scribbled over: put back what we know exists.
    if (published < f.local) f.shared = f.local;
  }
}

uint32_t Segment::GrowTable(Table table) {
  static const char* const kNames[] = {"channel", "group", "membership", "queue node"};
  static const char* const kOptions[] = {"maxChannels", "maxGroups", "maxMembers", "maxNodes"};
  Header& h = *header_;
  uint32_t* shared = nullptr;
  uint32_t current = 0, limit = 0;
  size_t record = 0;
  // One line per table reads as a table.
  // clang-format off
  switch (table) {
    case Table::kChannels: shared = &h.channel_records; current = channel_records_; limit = max_channels_; record = sizeof(Channel); break;
    case Table::kGroups: shared = &h.group_records; current = group_records_; limit = max_groups_; record = sizeof(Group); break;
    case Table::kMembers: shared = &h.member_records; current = member_records_; limit = max_members_; record = sizeof(Member); break;
    case Table::kNodes: shared = &h.node_records; current = node_records_; limit = max_nodes_; record = sizeof(Node); break;
  }
  // clang-format on
  if (current >= limit) return kNil;
  uint32_t step = static_cast<uint32_t>(kTableStepBytes / record);
  uint32_t target = limit - current < step ? limit : current + step;
  uint64_t from = RecordOffset(table, current);
  uint64_t bytes = RecordOffset(table, target) - from;
  int err = Reserve(from, bytes);
  if (err != 0) {
    int t = static_cast<int>(table);
    if (err == ENOSPC) {
      throw Error(ErrorCode::kNoSpace,
                  std::string("no room in /dev/shm for more ") + kNames[t] + " records (" +
                      std::to_string(current) + " in use of " + kOptions[t] + " " +
                      std::to_string(limit) + ", the next " + Mib(bytes) +
                      " could not be reserved): " + SpaceReport() + ". " + SpaceAdvice());
    }
    ThrowSystemError("fallocate(" + object_name_ + ")", err);
  }
  FAULT_POINT(11);  // table step reserved, not yet published
  *shared = target;
  // One line per table reads as a table.
  // clang-format off
  switch (table) {
    case Table::kChannels: channel_records_ = target; break;
    case Table::kGroups: group_records_ = target; break;
    case Table::kMembers: member_records_ = target; break;
    case Table::kNodes: node_records_ = target; break;
  }
  // clang-format on
  return current;
}

int Segment::Reserve(uint64_t offset, uint64_t length) {
  if (length == 0) return 0;
  for (;;) {
    if (fallocate(fd_, 0, static_cast<off_t>(offset), static_cast<off_t>(length)) == 0) return 0;
    if (errno == EINTR) continue;
    if (errno == EOPNOTSUPP || errno == ENOSYS) {
      // Not tmpfs (an unusual /dev/shm): glibc's fallback writes every block, same guarantee.
      return posix_fallocate(fd_, static_cast<off_t>(offset), static_cast<off_t>(length));
    }
    return errno;
  }
}

void Segment::Release(uint64_t offset, uint64_t length) {
  if (length == 0) return;
  // Best effort: a file system without hole punching keeps the pages, nothing breaks.
  while (fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                   static_cast<off_t>(length)) != 0 &&
         errno == EINTR) {
  }
}

uint64_t Segment::chunk_bytes(uint32_t chunk) const {
  uint64_t first = uint64_t{chunk} * kChunkPages;
  if (first >= page_count_) return 0;
  uint64_t pages = page_count_ - first < kChunkPages ? page_count_ - first : kChunkPages;
  return pages * kPageSize;
}

ArenaChunk& Segment::chunk(uint32_t i) const {
  if (i >= chunk_count_) OutOfBounds("arena chunk", i, chunk_count_);
  return chunks_[i];
}

uint64_t Segment::ShmBytes() const {
  struct stat st;
  if (fstat(fd_, &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

std::string Segment::SpaceReport() const {
  struct statvfs fs;
  if (fstatvfs(fd_, &fs) != 0) return "the free space of /dev/shm is unknown";
  uint64_t total = uint64_t{fs.f_blocks} * fs.f_frsize;
  uint64_t free = uint64_t{fs.f_bavail} * fs.f_frsize;
  return "/dev/shm has " + Mib(free) + " free of " + Mib(total);
}

std::string Segment::SpaceAdvice() {
  return "Make room (npx shm-channels list shows what each layer uses; npx shm-channels prune "
         "removes layers no process uses), give the container more shared memory (docker run "
         "--shm-size=256m; in compose, shm_size: 256m), or open the layer with a smaller `size` "
         "option";
}

void Segment::Corrupt(const std::string& what) const {
  corruption_seen_ = true;
  throw Error(ErrorCode::kCorrupt, what);
}

void Segment::OutOfBounds(const char* what, uint32_t index, uint32_t limit) const {
  Corrupt(std::string("shared memory references ") + what + " " + std::to_string(index) +
          " outside 0.." + std::to_string(limit));
}

Slot& Segment::slot(uint32_t i) const { return Checked(slots_, i, kMaxSlots, "slot"); }
Channel& Segment::channel(uint32_t i) const {
  return Checked(channels_, i, channel_records_, "channel");
}
uint32_t& Segment::channel_bucket(uint32_t i) const {
  return Checked(channel_buckets_, i, channel_buckets_count_, "channel bucket");
}
Group& Segment::group(uint32_t i) const { return Checked(groups_, i, group_records_, "group"); }
uint32_t& Segment::group_bucket(uint32_t i) const {
  return Checked(group_buckets_, i, group_buckets_count_, "group bucket");
}
Member& Segment::member(uint32_t i) const {
  return Checked(members_, i, member_records_, "member");
}
uint32_t& Segment::member_bucket(uint32_t i) const {
  return Checked(member_buckets_, i, member_buckets_count_, "member bucket");
}
Node& Segment::node(uint32_t i) const { return Checked(nodes_, i, node_records_, "node"); }
uint8_t* Segment::page(uint32_t i) const {
  if (i >= page_count_) OutOfBounds("page", i, page_count_);
  return arena_ + uint64_t{i} * kPageSize;
}
BlockInfo Segment::ReadBlock(uint32_t first_page) const {
  BlockInfo info;
  if (first_page >= page_count_) return info;
  const BlockHeader& b =
      *reinterpret_cast<const BlockHeader*>(arena_ + uint64_t{first_page} * kPageSize);
  // Never read a header in pages that are not backed (reserved) in /dev/shm.
  if (LoadOnce(chunks_[first_page / kChunkPages].committed) != 1) return info;
  uint32_t magic = LoadOnce(b.magic);
  info.pages = LoadOnce(b.pages);
  info.length = LoadOnce(b.length);
  info.checksum = LoadOnce(b.checksum);
  info.refcount = LoadOnce(b.refcount);
  info.valid = magic == kBlockMagic && info.pages != 0 && info.pages <= page_count_ - first_page &&
               uint64_t{info.length} + sizeof(BlockHeader) <= uint64_t{info.pages} * kPageSize &&
               LoadOnce(chunks_[(first_page + info.pages - 1) / kChunkPages].committed) == 1;
  info.message = info.valid && info.length <= max_message_size_;
  return info;
}

BlockInfo Segment::CheckedBlock(uint32_t first_page) const {
  if (first_page < page_count_ && LoadOnce(chunks_[first_page / kChunkPages].committed) != 1) {
    Corrupt("message block at page " + std::to_string(first_page) + " lies in unreserved memory");
  }
  BlockInfo info = ReadBlock(first_page);
  if (!info.valid) Corrupt("message block at page " + std::to_string(first_page) + " is damaged");
  return info;
}

BlockHeader& Segment::block(uint32_t first_page) const {
  CheckedBlock(first_page);
  return *reinterpret_cast<BlockHeader*>(page(first_page));
}

bool Segment::TryLockSlotByte(uint32_t index) {
  return OfdLock(fd_, F_WRLCK, kSlotLockBase + index, false);
}

void Segment::UnlockSlotByte(uint32_t index) {
  OfdLock(fd_, F_UNLCK, kSlotLockBase + index, false);
}

bool Segment::IsSlotHeld(uint32_t index) const {
  struct flock fl;
  std::memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = kSlotLockBase + index;
  fl.l_len = 1;
  if (fcntl(fd_, F_OFD_GETLK, &fl) != 0) return true;  // unknown: assume alive, never steal
  return fl.l_type != F_UNLCK;
}

bool Segment::IsUnlinked() const {
  struct stat st;
  if (fstat(fd_, &st) == 0 && st.st_nlink == 0) return true;
  int fd = shm_open(object_name_.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return errno == ENOENT;
  bool same = fstat(fd, &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_;
  close(fd);
  return !same;
}

}  // namespace shmch
