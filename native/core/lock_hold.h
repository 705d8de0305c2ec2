// How long this instance held the segment lock, per kind of operation: a histogram in private
// memory (never in the segment, so no other process can forge it and the layout is untouched).
// Every critical section is timed from the acquiring CAS to the releasing store, waits for the
// lock excluded: what it measures is the work done under the lock, which every other process
// waits behind. Buckets are log-linear (4 per power of two), so a percentile read from them is
// the upper edge of its bucket: at most 25% above the true value, and never above the maximum.
#pragma once

#include <cstdint>

namespace shmch {

enum class LockOp : uint8_t {
  kSend,
  kGroupSend,
  kReceive,
  kReceiveAny,
  kGroupAdd,
  kGroupDiscard,
  kFlush,
  kMaintain,  // housekeeping: reclaims, the expiry sweep, stale waits
  kRecover,   // any operation whose critical section rebuilt derived state (a dead holder's)
  kOther,     // attach, close, ready list, unwait, release, inspection (stats, verify, lists)
  kCount,
};

constexpr const char* LockOpName(LockOp op) {
  switch (op) {
    case LockOp::kSend: return "send";
    case LockOp::kGroupSend: return "groupSend";
    case LockOp::kReceive: return "receive";
    case LockOp::kReceiveAny: return "receiveAny";
    case LockOp::kGroupAdd: return "groupAdd";
    case LockOp::kGroupDiscard: return "groupDiscard";
    case LockOp::kFlush: return "flush";
    case LockOp::kMaintain: return "maintain";
    case LockOp::kRecover: return "recover";
    case LockOp::kOther: return "other";
    case LockOp::kCount: break;
  }
  return "?";
}

class LockHoldHistogram {
 public:
  static constexpr int kSubBits = 2;  // 4 buckets per power of two
  static constexpr int kBuckets = (64 - kSubBits + 1) << kSubBits;

  // Bucket of a duration: values below 4 ns get one bucket each; above, the power of two and
  // the next two bits select it.
  static constexpr int BucketOf(uint64_t ns) {
    if (ns < (1u << kSubBits)) return static_cast<int>(ns);
    int log2 = 63 - __builtin_clzll(ns);
    int sub = static_cast<int>((ns >> (log2 - kSubBits)) & ((1u << kSubBits) - 1));
    return ((log2 - kSubBits + 1) << kSubBits) + sub;
  }
  // The largest duration that falls in `bucket`.
  static constexpr uint64_t UpperEdgeOf(int bucket) {
    if (bucket < (1 << kSubBits)) return static_cast<uint64_t>(bucket);
    int log2 = (bucket >> kSubBits) + kSubBits - 1;
    uint64_t sub = static_cast<uint64_t>(bucket & ((1 << kSubBits) - 1));
    uint64_t low = (uint64_t{1} << log2) | (sub << (log2 - kSubBits));
    return low + (uint64_t{1} << (log2 - kSubBits)) - 1;
  }

  void Record(uint64_t ns) {
    ++buckets_[BucketOf(ns)];
    ++count_;
    total_ns_ += ns;
    if (ns > max_ns_) max_ns_ = ns;
  }
  // The upper edge of the bucket holding the sample of rank ceil(fraction * count), capped at
  // the maximum; 0 when empty.
  uint64_t Percentile(double fraction) const {
    if (count_ == 0) return 0;
    uint64_t rank = static_cast<uint64_t>(fraction * static_cast<double>(count_));
    if (static_cast<double>(rank) < fraction * static_cast<double>(count_)) ++rank;
    if (rank == 0) rank = 1;
    uint64_t seen = 0;
    for (int b = 0; b < kBuckets; ++b) {
      seen += buckets_[b];
      if (seen >= rank) return UpperEdgeOf(b) < max_ns_ ? UpperEdgeOf(b) : max_ns_;
    }
    return max_ns_;
  }
  uint64_t count() const { return count_; }
  uint64_t max_ns() const { return max_ns_; }
  uint64_t total_ns() const { return total_ns_; }
  uint64_t bucket(int b) const { return buckets_[b]; }

 private:
  uint64_t buckets_[kBuckets] = {};
  uint64_t count_ = 0;
  uint64_t total_ns_ = 0;
  uint64_t max_ns_ = 0;
};

struct LockHoldStats {
  LockHoldHistogram of[static_cast<int>(LockOp::kCount)];
  LockHoldHistogram& operator[](LockOp op) { return of[static_cast<int>(op)]; }
  const LockHoldHistogram& operator[](LockOp op) const { return of[static_cast<int>(op)]; }
};

}  // namespace shmch
