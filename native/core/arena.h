// The message arena: variable-size blocks made of whole 64-byte pages, tracked by one bit a page.
// A block is written once by its sender and read (copied out) by its receivers; group sends share
// one block between many queued nodes through its refcount.
#pragma once

#include <cstdint>

#include "segment.h"

namespace shmch {

class Arena {
 public:
  explicit Arena(Segment& segment) : seg_(segment) {}

  static uint32_t PagesFor(uint32_t payload_bytes) {
    return static_cast<uint32_t>((uint64_t{payload_bytes} + sizeof(BlockHeader) + kPageSize - 1) /
                                 kPageSize);
  }

  // Allocates a block for `length` payload bytes with refcount 0; kNil when no run of pages fits.
  uint32_t Allocate(uint32_t length);
  void Free(uint32_t first_page);
  uint8_t* Payload(uint32_t first_page) { return seg_.page(first_page) + sizeof(BlockHeader); }

  // Recovery: forget every allocation, then re-mark the blocks found live.
  void ClearAll();
  void MarkLive(uint32_t first_page, uint32_t pages);
  bool IsMarked(uint32_t page) const;

 private:
  uint32_t FindRun(uint32_t from, uint32_t to, uint32_t pages) const;
  void SetRange(uint32_t first, uint32_t count, bool value);

  Segment& seg_;
};

}  // namespace shmch
