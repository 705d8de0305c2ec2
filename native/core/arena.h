// The message arena: variable-size blocks made of whole 64-byte pages, tracked by one bit a page.
// A block is written once by its sender and read (copied out) by its receivers; group sends share
// one block between many queued nodes through its refcount.
//
// Memory on demand: the arena is split into chunks of kChunkBytes. A chunk is reserved in
// /dev/shm (fallocate) when a block first needs it, so a full /dev/shm is an error at the send,
// never a SIGBUS at a page fault; a chunk left empty is given back (punched) once more than
// KeepEmptyBytes() sit empty, and every empty chunk is given back by Trim() (an idle layer, the
// last process out, prune). Allocation prefers chunks already reserved; a block of a chunk or
// more takes the lowest reserved run that fits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "segment.h"

namespace shmch {

class Arena {
 public:
  // Empty chunks a busy layer keeps reserved (its warm reserve), so a flow of large messages
  // reuses pages that are already reserved and mapped instead of punching them and faulting in
  // fresh ones (2.6 GB/s against 13.5 GB/s warm on the bench machine): enough that the layer's
  // reservation stays at its peak use since it was last idle plus 2 MiB, at least 4 MiB, never
  // more than an eighth of /dev/shm (8 MiB of Docker's 64 MiB). Keeping only the largest message
  // was not enough: a consumer that takes several at once left more empty than that, and every
  // chunk past it was punched and faulted in again by the next sends (~5 punches per 5 MB message).
  static constexpr uint64_t kKeepEmptyBytes = 4u << 20;
  uint64_t KeepEmptyBytes() const;

  explicit Arena(Segment& segment) : seg_(segment) {}

  static uint32_t PagesFor(uint32_t payload_bytes) {
    return static_cast<uint32_t>((uint64_t{payload_bytes} + sizeof(BlockHeader) + kPageSize - 1) /
                                 kPageSize);
  }

  // Allocates a block for `length` payload bytes with refcount 0; kNil when no run of pages fits.
  // Throws kArenaFull (naming /dev/shm's numbers) when the run's memory cannot be reserved.
  uint32_t Allocate(uint32_t length);
  void Free(uint32_t first_page);
  uint8_t* Payload(uint32_t first_page) { return seg_.page(first_page) + sizeof(BlockHeader); }
  // Gives every empty reserved chunk back to /dev/shm (and forgets the peak use).
  void Trim();

  // Recovery: forget every allocation, re-mark the blocks found live, then Rebuild() the chunk
  // accounting from the bitmap and give back what no live block needs.
  void ClearAll();
  void MarkLive(uint32_t first_page, uint32_t pages);
  void Rebuild();
  bool IsMarked(uint32_t page) const;
  // Consistency of the chunk accounting with the bitmap (Verify); appends what is wrong.
  void Check(std::vector<std::string>& problems) const;

 private:
  uint32_t FindRun(uint32_t from, uint32_t to, uint32_t pages) const;
  uint32_t FindReservedRun(uint32_t from, uint32_t to, uint32_t pages) const;
  // The first page of the lowest `chunks` consecutive empty chunks (reserved ones only, or any).
  uint32_t FindEmptyChunks(uint32_t chunks, bool reserved_only) const;
  void Reserve(uint32_t first, uint32_t pages);
  void CountUsed(uint32_t first, uint32_t pages, bool add);
  void ReleaseChunk(uint32_t chunk);
  bool ChunkBitsClear(uint32_t chunk) const;
  void SetRange(uint32_t first, uint32_t count, bool value);

  Segment& seg_;
};

}  // namespace shmch
