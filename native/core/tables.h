// Name-keyed hash tables in shared memory (channels and groups): chained buckets of record indices.
// The chains are derived data, rebuilt by recovery from the records' in_use flags and names.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include "errors.h"
#include "fault_points.h"
#include "layout.h"
#include "segment.h"

namespace shmch {

inline uint32_t HashName(std::string_view name) {
  uint32_t h = 2166136261u;  // FNV-1a
  for (unsigned char c : name) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

inline uint32_t HashPair(uint32_t a, uint32_t b) {
  uint64_t x = (uint64_t{a} << 32) | b;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}

// Record is Channel or Group; Access provides record(i), bucket(i) and their counts.
template <typename Record, typename Access>
class NameTable {
 public:
  NameTable(Access access, uint32_t records, uint32_t buckets)
      : access_(access), records_(records), bucket_mask_(buckets - 1) {}

  uint32_t Find(std::string_view name) const {
    uint32_t hash = HashName(name);
    uint32_t i = access_.bucket(hash & bucket_mask_);
    for (uint32_t steps = 0; i != kNil; ++steps) {
      if (steps > records_) access_.s->Corrupt("hash chain loops");
      Record& r = access_.record(i);
      if (r.in_use == 1 && r.hash == hash && r.name_length == name.size() &&
          std::memcmp(r.name, name.data(), name.size()) == 0) {
        return i;
      }
      i = r.next_in_bucket;
    }
    return kNil;
  }

  // Returns kNil when every record is taken. `rover` remembers where the last free one was.
  // `init` fills in the caller's own fields before the record is published.
  template <typename Init>
  uint32_t Insert(std::string_view name, uint32_t& rover, uint32_t& used, const Init& init) {
    // The record's name field holds kMaxNameLength bytes; callers validate, this is the backstop.
    if (name.empty() || name.size() > kMaxNameLength) {
      throw Error(ErrorCode::kInvalidArgument, "name must be 1 to " + std::to_string(kMaxNameLength) + " characters");
    }
    if (used >= records_) return kNil;
    for (uint32_t n = 0; n < records_; ++n) {
      uint32_t i = (rover + n) % records_;
      Record& r = access_.record(i);
      if (r.in_use) continue;
      std::memset(static_cast<void*>(&r), 0, sizeof(Record));
      r.name_length = static_cast<uint32_t>(name.size());
      std::memcpy(r.name, name.data(), name.size());
      r.hash = HashName(name);
      InitRecord(r);
      init(r);
      // in_use last: a record is either free or complete, whenever its writer dies.
      __atomic_store_n(&r.in_use, 1u, __ATOMIC_RELEASE);
      FAULT_POINT(10);
      Link(i);
      rover = i + 1;
      ++used;
      return i;
    }
    return kNil;
  }
  uint32_t Insert(std::string_view name, uint32_t& rover, uint32_t& used) {
    return Insert(name, rover, used, [](Record&) {});
  }

  void Remove(uint32_t index, uint32_t& used) {
    Record& r = access_.record(index);
    uint32_t* link = &access_.bucket(r.hash & bucket_mask_);
    for (uint32_t steps = 0; *link != kNil; ++steps) {
      if (steps > records_) access_.s->Corrupt("hash chain loops");
      if (*link == index) {
        *link = r.next_in_bucket;
        break;
      }
      link = &access_.record(*link).next_in_bucket;
    }
    __atomic_store_n(&r.in_use, 0u, __ATOMIC_RELEASE);
    if (used > 0) --used;
  }

  void Link(uint32_t index) {
    Record& r = access_.record(index);
    uint32_t& head = access_.bucket(r.hash & bucket_mask_);
    r.next_in_bucket = head;
    head = index;
  }

  void ClearBuckets() {
    for (uint32_t b = 0; b <= bucket_mask_; ++b) access_.bucket(b) = kNil;
  }

 private:
  static void InitRecord(Channel& c) {
    c.head = c.tail = kNil;
  }
  static void InitRecord(Group& g) { g.first_member = kNil; }

  Access access_;
  uint32_t records_;
  uint32_t bucket_mask_;
};

struct ChannelAccess {
  Segment* s;
  Channel& record(uint32_t i) const { return s->channel(i); }
  uint32_t& bucket(uint32_t i) const { return s->channel_bucket(i); }
};
struct GroupAccess {
  Segment* s;
  Group& record(uint32_t i) const { return s->group(i); }
  uint32_t& bucket(uint32_t i) const { return s->group_bucket(i); }
};

inline NameTable<Channel, ChannelAccess> Channels(Segment& s) {
  return {ChannelAccess{&s}, s.channel_records(), s.channel_buckets()};
}
inline NameTable<Group, GroupAccess> Groups(Segment& s) {
  return {GroupAccess{&s}, s.group_records(), s.group_buckets()};
}

}  // namespace shmch
