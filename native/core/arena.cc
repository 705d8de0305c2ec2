#include "arena.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "errors.h"
#include "fault_points.h"

namespace shmch {

bool Arena::IsMarked(uint32_t page) const {
  return (seg_.page_bitmap()[page / 64] >> (page % 64)) & 1u;
}

uint32_t Arena::FindRun(uint32_t from, uint32_t to, uint32_t pages) const {
  const uint64_t* bits = seg_.page_bitmap();
  uint32_t run_start = from, run_length = 0;
  uint32_t p = from;
  while (p < to) {
    uint64_t word = bits[p / 64];
    if ((p % 64) == 0 && p + 64 <= to && (word == 0 || word == ~uint64_t{0})) {
      if (word == 0) {
        if (run_length == 0) run_start = p;
        run_length += 64;
        if (run_length >= pages) return run_start;
      } else {
        run_length = 0;
      }
      p += 64;
      continue;
    }
    if ((word >> (p % 64)) & 1u) {
      run_length = 0;
    } else {
      if (run_length == 0) run_start = p;
      if (++run_length >= pages) return run_start;
    }
    ++p;
  }
  return kNil;
}

void Arena::SetRange(uint32_t first, uint32_t count, bool value) {
  uint64_t* bits = seg_.page_bitmap();
  uint32_t p = first, end = first + count;
  while (p < end) {
    if ((p % 64) == 0 && p + 64 <= end) {
      bits[p / 64] = value ? ~uint64_t{0} : 0;
      p += 64;
      continue;
    }
    uint64_t mask = uint64_t{1} << (p % 64);
    bits[p / 64] = value ? (bits[p / 64] | mask) : (bits[p / 64] & ~mask);
    ++p;
  }
}

uint32_t Arena::FindReservedRun(uint32_t from, uint32_t to, uint32_t pages) const {
  // Looks only inside spans of consecutive reserved chunks, so a busy layer reuses its memory.
  const uint32_t chunks = seg_.chunk_count();
  const uint32_t page_count = seg_.page_count();
  for (uint32_t c = from / kChunkPages; c < chunks && uint64_t{c} * kChunkPages < to;) {
    if (seg_.chunk(c).committed != 1) {
      ++c;
      continue;
    }
    uint32_t d = c + 1;
    while (d < chunks && seg_.chunk(d).committed == 1) ++d;
    uint64_t span_end = uint64_t{d} * kChunkPages;
    uint32_t lo = from > c * kChunkPages ? from : c * kChunkPages;
    uint32_t hi = static_cast<uint32_t>(span_end < page_count ? span_end : page_count);
    if (hi > to) hi = to;
    if (hi > lo && hi - lo >= pages) {
      uint32_t first = FindRun(lo, hi, pages);
      if (first != kNil) return first;
    }
    c = d;
  }
  return kNil;
}

uint32_t Arena::FindEmptyChunks(uint32_t chunks, bool reserved_only) const {
  const uint32_t count = seg_.chunk_count();
  const uint64_t page_count = seg_.page_count();
  uint32_t run = 0;
  for (uint32_t c = 0; c < count && uint64_t{c + 1} * kChunkPages <= page_count; ++c) {
    const ArenaChunk& chunk = seg_.chunk(c);
    const bool empty = chunk.used_pages == 0 && (!reserved_only || chunk.committed == 1);
    run = empty ? run + 1 : 0;
    if (run < chunks) continue;
    // The counts picked the run; the bitmap (the primary record of live pages) decides.
    uint32_t from = c + 1 - chunks, bad = kNil;
    for (uint32_t k = from; k <= c && bad == kNil; ++k) {
      if (!ChunkBitsClear(k)) bad = k;
    }
    if (bad == kNil) return from * kChunkPages;
    run = c - bad;
  }
  return kNil;
}

uint32_t Arena::Allocate(uint32_t length) {
  Header& h = seg_.header();
  const uint32_t page_count = seg_.page_count();
  uint32_t pages = PagesFor(length);
  uint32_t used = h.used_pages < page_count ? h.used_pages : page_count;
  if (pages > page_count - used) return kNil;
  uint32_t first = kNil;
  // A block of half a chunk or more takes whole chunks of its own, the lowest empty ones (those
  // reserved first), when that rounds it up by an eighth at most (5 MB: 4.6%; 1 MiB and a header
  // would take two chunks: placed exactly as before). Freed, it leaves whole empty chunks, which
  // fit the next block of a stream of large messages: blocks that shared chunks with their
  // neighbours and with small blocks left holes too small or split, so the next one reserved
  // fresh chunks and emptied ones were punched, both under the lock (W6: a 0.3-0.8 ms fallocate
  // in most 5 MB sends, 3-5 punches in their receives).
  const uint32_t chunks = (pages + kChunkPages - 1) / kChunkPages;
  const uint64_t whole = uint64_t{chunks} * kChunkPages;
  if (pages >= kChunkPages / 2 && whole - pages <= pages / 8) {
    if (whole <= page_count - used) {
      first = FindEmptyChunks(chunks, true);
      if (first == kNil) {
        first = FindEmptyChunks(chunks, false);
        try {
          if (first != kNil) Reserve(first, static_cast<uint32_t>(whole));
        } catch (const Error& e) {
          // /dev/shm is full: a run that needs fewer fresh pages may still be found below.
          if (e.code() != ErrorCode::kArenaFull) throw;
          first = kNil;
        }
      }
      if (first != kNil) pages = static_cast<uint32_t>(whole);
    }
  }
  const bool own_chunks = first != kNil;
  uint32_t rover = h.page_rover < page_count ? h.page_rover : 0;
  uint32_t wrap_end = rover + pages < page_count ? rover + pages : page_count;
  uint64_t reserved_pages = uint64_t{h.committed_chunks} * kChunkPages;
  if (first == kNil && reserved_pages >= uint64_t{used} + pages) {
    // A block of a chunk or more takes the lowest reserved run that fits, not the next one after
    // the rover: a stream of large messages then cycles through the same chunks, which stay
    // reserved and mapped, instead of marching through the arena and faulting in fresh pages.
    if (pages >= kChunkPages) {
      first = FindReservedRun(0, page_count, pages);
    } else {
      first = FindReservedRun(rover, page_count, pages);
      if (first == kNil) first = FindReservedRun(0, wrap_end, pages);
    }
  }
  if (first == kNil) {
    first = FindRun(rover, page_count, pages);
    if (first == kNil) first = FindRun(0, wrap_end, pages);
    if (first == kNil) return kNil;
    Reserve(first, pages);
  }
  SetRange(first, pages, true);
  CountUsed(first, pages, true);
  FAULT_POINT(8);
  h.used_pages += pages;
  if (h.used_pages > h.peak_used_pages) h.peak_used_pages = h.used_pages;
  // Only small blocks move the rover: a large one took the lowest reserved run, and small blocks
  // placed right after it would split the run the next large one of a stream needs (it then
  // reserved fresh chunks and gave the freed ones back, both under the lock, per message).
  if (pages < kChunkPages && !own_chunks) h.page_rover = first + pages;
  auto* block = reinterpret_cast<BlockHeader*>(seg_.page(first));
  block->refcount = 0;
  block->pages = pages;
  block->length = length;
  block->magic = kBlockMagic;
  return first;
}

void Arena::Reserve(uint32_t first, uint32_t pages) {
  Header& h = seg_.header();
  const uint32_t c0 = first / kChunkPages, c1 = (first + pages - 1) / kChunkPages;
  bool trimmed = false;
  for (uint32_t c = c0; c <= c1;) {
    if (seg_.chunk(c).committed == 1) {
      ++c;
      continue;
    }
    uint32_t d = c;
    while (d <= c1 && seg_.chunk(d).committed != 1) ++d;
    uint64_t offset = seg_.chunk_offset(c);
    uint64_t bytes = seg_.chunk_offset(d - 1) + seg_.chunk_bytes(d - 1) - offset;
    int err = seg_.Reserve(offset, bytes);
    if (err == ENOSPC && !trimmed) {
      // This layer's own empty chunks may be what fills /dev/shm: give them back and retry.
      trimmed = true;
      for (uint32_t k = 0; k < seg_.chunk_count(); ++k) {
        if (k < c0 || k > c1) {
          if (seg_.chunk(k).committed == 1 && seg_.chunk(k).used_pages == 0) ReleaseChunk(k);
        }
      }
      err = seg_.Reserve(offset, bytes);
    }
    if (err != 0) {
      if (err != ENOSPC) ThrowSystemError("fallocate(" + seg_.object_name() + ")", err);
      char numbers[160];
      std::snprintf(numbers, sizeof numbers,
                    "no room in /dev/shm for a message of %u bytes (%.1f MiB more of the layer's "
                    "%.1f MiB had to be reserved): ",
                    pages * kPageSize - static_cast<uint32_t>(sizeof(BlockHeader)),
                    static_cast<double>(bytes) / (1 << 20),
                    static_cast<double>(seg_.size()) / (1 << 20));
      throw Error(ErrorCode::kArenaFull, numbers + seg_.SpaceReport() +
                                             ". Receive what is queued, or: " + Segment::SpaceAdvice());
    }
    FAULT_POINT(12);  // chunks reserved in /dev/shm, not yet marked committed
    for (uint32_t k = c; k < d; ++k) {
      ArenaChunk& chunk = seg_.chunk(k);
      chunk.used_pages = 0;
      chunk.committed = 1;
      ++h.committed_chunks;
      ++h.empty_chunks;
    }
    c = d;
  }
}

void Arena::CountUsed(uint32_t first, uint32_t pages, bool add) {
  Header& h = seg_.header();
  const uint32_t end = first + pages;
  for (uint32_t p = first; p < end;) {
    uint32_t c = p / kChunkPages;
    uint32_t chunk_end = (c + 1) * kChunkPages < end ? (c + 1) * kChunkPages : end;
    uint32_t n = chunk_end - p;
    ArenaChunk& chunk = seg_.chunk(c);
    if (add) {
      if (chunk.used_pages == 0 && chunk.committed == 1 && h.empty_chunks) --h.empty_chunks;
      chunk.used_pages += n;
    } else {
      chunk.used_pages = chunk.used_pages > n ? chunk.used_pages - n : 0;
      if (chunk.used_pages == 0 && chunk.committed == 1) {
        ++h.empty_chunks;
        if (uint64_t{h.empty_chunks} * kChunkBytes > KeepEmptyBytes()) ReleaseChunk(c);
      }
    }
    p = chunk_end;
  }
}

bool Arena::ChunkBitsClear(uint32_t c) const {
  const uint64_t* bits = seg_.page_bitmap();
  uint32_t from = c * kChunkPages;
  uint32_t to = static_cast<uint32_t>(from + seg_.chunk_bytes(c) / kPageSize);
  for (uint32_t w = from / 64; w < to / 64; ++w) {
    if (bits[w]) return false;
  }
  return true;
}

void Arena::ReleaseChunk(uint32_t c) {
  Header& h = seg_.header();
  ArenaChunk& chunk = seg_.chunk(c);
  // The bitmap is the primary record of live pages: a count gone wrong never punches live data.
  if (chunk.committed != 1 || !ChunkBitsClear(c)) return;
  chunk.committed = 0;
  if (h.committed_chunks) --h.committed_chunks;
  if (h.empty_chunks) --h.empty_chunks;
  FAULT_POINT(13);  // chunk no longer marked committed, not yet given back
  seg_.Release(seg_.chunk_offset(c), seg_.chunk_bytes(c));
}

uint64_t Arena::KeepEmptyBytes() const {
  const Header& h = seg_.header();
  const uint64_t peak = uint64_t{h.peak_used_pages} * kPageSize;
  const uint64_t used = uint64_t{h.used_pages} * kPageSize;
  uint64_t keep = (peak > used ? peak - used : 0) + 2 * uint64_t{kChunkBytes};
  const uint64_t cap = seg_.shm_total_bytes() / 8;
  if (keep > cap) keep = cap;
  return keep > kKeepEmptyBytes ? keep : kKeepEmptyBytes;
}

void Arena::Trim() {
  seg_.header().peak_used_pages = seg_.header().used_pages;
  for (uint32_t c = 0; c < seg_.chunk_count(); ++c) {
    const ArenaChunk& chunk = seg_.chunk(c);
    if (chunk.committed == 1 && chunk.used_pages == 0) ReleaseChunk(c);
  }
}

void Arena::Free(uint32_t first_page) {
  // The page count is read once and checked: the bitmap range below is exactly what was checked.
  uint32_t pages = seg_.CheckedBlock(first_page).pages;
  seg_.block(first_page).magic = 0;
  SetRange(first_page, pages, false);
  Header& h = seg_.header();
  h.used_pages = h.used_pages >= pages ? h.used_pages - pages : 0;
  CountUsed(first_page, pages, false);
}

void Arena::ClearAll() {
  Header& h = seg_.header();
  std::memset(seg_.page_bitmap(), 0, seg_.page_count() / 8);
  h.used_pages = 0;
  h.page_rover = 0;
  for (uint32_t c = 0; c < seg_.chunk_count(); ++c) seg_.chunk(c).used_pages = 0;
}

void Arena::MarkLive(uint32_t first_page, uint32_t pages) {
  SetRange(first_page, pages, true);
  seg_.header().used_pages += pages;
  const uint32_t end = first_page + pages;
  for (uint32_t p = first_page; p < end;) {
    uint32_t c = p / kChunkPages;
    uint32_t chunk_end = (c + 1) * kChunkPages < end ? (c + 1) * kChunkPages : end;
    seg_.chunk(c).used_pages += chunk_end - p;
    p = chunk_end;
  }
}

void Arena::Rebuild() {
  Header& h = seg_.header();
  const uint32_t chunks = seg_.chunk_count();
  uint32_t committed = 0, empty = 0;
  for (uint32_t c = 0; c < chunks; ++c) {
    ArenaChunk& chunk = seg_.chunk(c);
    if (chunk.used_pages > 0 && chunk.committed != 1) {
      // Live pages in a chunk not marked reserved: only a scribble does that. Back them now.
      seg_.Reserve(seg_.chunk_offset(c), seg_.chunk_bytes(c));
      chunk.committed = 1;
    }
    if (chunk.committed != 1) chunk.committed = 0;
    if (chunk.committed) {
      ++committed;
      if (chunk.used_pages == 0) ++empty;
    }
  }
  h.committed_chunks = committed;
  h.empty_chunks = empty;
  // A holder that died between reserving chunks and marking them left reservations nobody
  // knows of: punch every span of unmarked chunks (where nothing is reserved this costs nothing).
  for (uint32_t c = 0; c < chunks;) {
    if (seg_.chunk(c).committed) {
      ++c;
      continue;
    }
    uint32_t d = c;
    while (d < chunks && !seg_.chunk(d).committed) ++d;
    seg_.Release(seg_.chunk_offset(c), seg_.chunk_offset(d - 1) + seg_.chunk_bytes(d - 1) - seg_.chunk_offset(c));
    c = d;
  }
  for (uint32_t c = 0; c < chunks && uint64_t{h.empty_chunks} * kChunkBytes > KeepEmptyBytes(); ++c) {
    if (seg_.chunk(c).committed == 1 && seg_.chunk(c).used_pages == 0) ReleaseChunk(c);
  }
}

void Arena::Check(std::vector<std::string>& problems) const {
  const Header& h = seg_.header();
  uint32_t committed = 0, empty = 0;
  for (uint32_t c = 0; c < seg_.chunk_count(); ++c) {
    const ArenaChunk& chunk = seg_.chunk(c);
    uint32_t from = c * kChunkPages;
    uint32_t to = static_cast<uint32_t>(from + seg_.chunk_bytes(c) / kPageSize);
    uint32_t marked = 0;
    for (uint32_t p = from; p < to; ++p) marked += IsMarked(p) ? 1 : 0;
    std::string label = "arena chunk " + std::to_string(c);
    if (marked != chunk.used_pages) {
      problems.push_back(label + " counts " + std::to_string(chunk.used_pages) + " used pages, the bitmap " +
                         std::to_string(marked));
    }
    if (marked && chunk.committed != 1) problems.push_back(label + " holds live pages but is not reserved");
    if (chunk.committed == 1) {
      ++committed;
      if (chunk.used_pages == 0) ++empty;
    }
  }
  if (committed != h.committed_chunks) problems.push_back("committed_chunks disagrees with the chunk table");
  if (empty != h.empty_chunks) problems.push_back("empty_chunks disagrees with the chunk table");
}

}  // namespace shmch
