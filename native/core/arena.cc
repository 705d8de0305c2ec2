#include "arena.h"

#include <cstring>

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

uint32_t Arena::Allocate(uint32_t length) {
  Header& h = seg_.header();
  uint32_t pages = PagesFor(length);
  if (pages > seg_.page_count() - h.used_pages) return kNil;
  uint32_t rover = h.page_rover < seg_.page_count() ? h.page_rover : 0;
  uint32_t first = FindRun(rover, seg_.page_count(), pages);
  if (first == kNil) first = FindRun(0, rover + pages < seg_.page_count() ? rover + pages : seg_.page_count(), pages);
  if (first == kNil) return kNil;
  SetRange(first, pages, true);
  FAULT_POINT(8);
  h.used_pages += pages;
  h.page_rover = first + pages;
  auto* block = reinterpret_cast<BlockHeader*>(seg_.page(first));
  block->refcount = 0;
  block->pages = pages;
  block->length = length;
  block->magic = kBlockMagic;
  return first;
}

void Arena::Free(uint32_t first_page) {
  BlockHeader& block = seg_.block(first_page);
  uint32_t pages = block.pages;
  block.magic = 0;
  SetRange(first_page, pages, false);
  Header& h = seg_.header();
  h.used_pages = h.used_pages >= pages ? h.used_pages - pages : 0;
}

void Arena::ClearAll() {
  Header& h = seg_.header();
  std::memset(seg_.page_bitmap(), 0, seg_.page_count() / 8);
  h.used_pages = 0;
  h.page_rover = 0;
}

void Arena::MarkLive(uint32_t first_page, uint32_t pages) {
  SetRange(first_page, pages, true);
  seg_.header().used_pages += pages;
}

}  // namespace shmch
