#include "segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
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
bool PlanRegions(Header& h, uint64_t size) {
  uint64_t off = kHeaderBytes;
  auto take = [&](uint64_t& field, uint64_t bytes) {
    off = AlignUp(off, 64);
    field = off;
    off += bytes;
  };
  if (h.max_channels == 0 || h.max_groups == 0 || h.max_members == 0 || h.max_nodes == 0) return false;
  if (h.max_channels >= kNil || h.max_groups >= kNil || h.max_members >= kNil || h.max_nodes >= kNil)
    return false;
  take(h.slots_offset, uint64_t{kMaxSlots} * sizeof(Slot));
  take(h.channels_offset, uint64_t{h.max_channels} * sizeof(Channel));
  take(h.channel_buckets_offset, uint64_t{h.channel_buckets} * 4);
  take(h.groups_offset, uint64_t{h.max_groups} * sizeof(Group));
  take(h.group_buckets_offset, uint64_t{h.group_buckets} * 4);
  take(h.members_offset, uint64_t{h.max_members} * sizeof(Member));
  take(h.member_buckets_offset, uint64_t{h.member_buckets} * 4);
  take(h.nodes_offset, uint64_t{h.max_nodes} * sizeof(Node));
  off = AlignUp(off, 64);
  if (off >= size) return false;
  // Each page costs kPageSize bytes plus one bitmap bit; pages come in whole bitmap words.
  uint64_t pages = (size - off - 128) * 8 / (8 * kPageSize + 1);
  pages = pages / 64 * 64;
  if (pages < 64 || pages >= kNil) return false;
  h.page_count = static_cast<uint32_t>(pages);
  take(h.page_bitmap_offset, pages / 8);
  take(h.arena_offset, pages * kPageSize);
  return off <= size;
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
      throw Error(ErrorCode::kNotFound, "no layer named '" + config.name + "' (" + object_name_ +
                                            " does not exist)");
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
      InitializeLocked(config);
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

void Segment::InitializeLocked(const SegmentConfig& config) {
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
  // Refuse up front what cannot fit: on a tmpfs as large as RAM, posix_fallocate would eat memory
  // until the OOM killer steps in long before it reports ENOSPC.
  struct statvfs fs;
  if (fstatvfs(fd_, &fs) == 0 && uint64_t{fs.f_bavail} * fs.f_frsize < config.size) {
    throw Error(ErrorCode::kNoSpace,
                "not enough space in /dev/shm for segment " + object_name_ + " of " +
                    std::to_string(config.size) + " bytes (" +
                    std::to_string(uint64_t{fs.f_bavail} * fs.f_frsize) + " bytes free)");
  }
  if (ftruncate(fd_, 0) != 0 || ftruncate(fd_, static_cast<off_t>(config.size)) != 0) {
    ThrowSystemError("ftruncate(" + object_name_ + ")", errno);
  }
  // Reserve every page now: a full /dev/shm must fail here with ENOSPC, not later with SIGBUS.
  int err = posix_fallocate(fd_, 0, static_cast<off_t>(config.size));
  if (err != 0) {
    ftruncate(fd_, 0);
    if (err == ENOSPC) {
      throw Error(ErrorCode::kNoSpace, "not enough space in /dev/shm for segment " + object_name_ +
                                           " of " + std::to_string(config.size) +
                                           " bytes (posix_fallocate: ENOSPC)");
    }
    ThrowSystemError("posix_fallocate(" + object_name_ + ")", err);
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
  std::memset(static_cast<void*>(slots_), 0, sizeof(Slot) * kMaxSlots);
  std::memset(channels_, 0, sizeof(Channel) * h.max_channels);
  std::memset(groups_, 0, sizeof(Group) * h.max_groups);
  std::memset(members_, 0, sizeof(Member) * h.max_members);
  std::memset(bitmap_, 0, h.page_count / 8);
  for (uint32_t i = 0; i < h.channel_buckets; ++i) channel_buckets_[i] = kNil;
  for (uint32_t i = 0; i < h.group_buckets; ++i) group_buckets_[i] = kNil;
  for (uint32_t i = 0; i < h.member_buckets; ++i) member_buckets_[i] = kNil;
  for (uint32_t i = 0; i < h.max_nodes; ++i) {
    nodes_[i].next = i + 1 < h.max_nodes ? i + 1 : kNil;
    nodes_[i].block = kNil;
  }
  h.free_node = 0;
  h.free_nodes = h.max_nodes;
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
                                         std::to_string(h.segment_size) + " differs from file size " +
                                         std::to_string(size_));
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
      h.max_message_size == 0 ||
      uint64_t{h.max_message_size} + sizeof(BlockHeader) > uint64_t{h.page_count} * kPageSize) {
    throw Error(ErrorCode::kCorrupt, "segment " + object_name_ + " has an inconsistent header");
  }
  ComputeRegions(h);
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
  arena_ = base_ + h.arena_offset;
}

void Segment::Corrupt(const std::string& what) const {
  corruption_seen_ = true;
  throw Error(ErrorCode::kCorrupt, what);
}

void Segment::OutOfBounds(const char* what, uint32_t index, uint32_t limit) const {
  Corrupt(std::string("shared memory references ") + what + " " + std::to_string(index) +
          " outside 0.." + std::to_string(limit));
}

Slot& Segment::slot(uint32_t i) const {
  if (i >= kMaxSlots) OutOfBounds("slot", i, kMaxSlots);
  return slots_[i];
}
Channel& Segment::channel(uint32_t i) const {
  if (i >= max_channels_) OutOfBounds("channel", i, max_channels_);
  return channels_[i];
}
uint32_t& Segment::channel_bucket(uint32_t i) const {
  if (i >= channel_buckets_count_) OutOfBounds("channel bucket", i, channel_buckets_count_);
  return channel_buckets_[i];
}
Group& Segment::group(uint32_t i) const {
  if (i >= max_groups_) OutOfBounds("group", i, max_groups_);
  return groups_[i];
}
uint32_t& Segment::group_bucket(uint32_t i) const {
  if (i >= group_buckets_count_) OutOfBounds("group bucket", i, group_buckets_count_);
  return group_buckets_[i];
}
Member& Segment::member(uint32_t i) const {
  if (i >= max_members_) OutOfBounds("member", i, max_members_);
  return members_[i];
}
uint32_t& Segment::member_bucket(uint32_t i) const {
  if (i >= member_buckets_count_) OutOfBounds("member bucket", i, member_buckets_count_);
  return member_buckets_[i];
}
Node& Segment::node(uint32_t i) const {
  if (i >= max_nodes_) OutOfBounds("node", i, max_nodes_);
  return nodes_[i];
}
uint8_t* Segment::page(uint32_t i) const {
  if (i >= page_count_) OutOfBounds("page", i, page_count_);
  return arena_ + uint64_t{i} * kPageSize;
}
bool Segment::IsValidBlock(uint32_t first_page) const {
  if (first_page >= page_count_) return false;
  const BlockHeader& b = *reinterpret_cast<const BlockHeader*>(arena_ + uint64_t{first_page} * kPageSize);
  return b.magic == kBlockMagic && b.pages != 0 && b.pages <= page_count_ - first_page &&
         uint64_t{b.length} + sizeof(BlockHeader) <= uint64_t{b.pages} * kPageSize &&
         b.length <= max_message_size_;
}

BlockHeader& Segment::block(uint32_t first_page) const {
  BlockHeader& b = *reinterpret_cast<BlockHeader*>(page(first_page));
  if (b.magic != kBlockMagic || b.pages == 0 || b.pages > page_count_ - first_page ||
      uint64_t{b.length} + sizeof(BlockHeader) > uint64_t{b.pages} * kPageSize) {
    Corrupt("message block at page " + std::to_string(first_page) + " is damaged");
  }
  return b;
}

bool Segment::TryLockSlotByte(uint32_t index) {
  return OfdLock(fd_, F_WRLCK, kSlotLockBase + index, false);
}

void Segment::UnlockSlotByte(uint32_t index) { OfdLock(fd_, F_UNLCK, kSlotLockBase + index, false); }

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
