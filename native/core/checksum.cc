#include "checksum.h"

#include <cstring>

namespace shmch {

namespace {

constexpr uint32_t kPolynomial = 0x82f63b78u;  // CRC-32C (Castagnoli), reflected

struct Table {
  uint32_t entries[256];
  constexpr Table() : entries() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (kPolynomial & (0u - (c & 1u)));
      entries[i] = c;
    }
  }
};
constexpr Table kTable;

uint32_t Crc32cPortable(uint32_t crc, const uint8_t* p, size_t n) {
  while (n--) crc = (crc >> 8) ^ kTable.entries[(crc ^ *p++) & 0xffu];
  return crc;
}

#if defined(__x86_64__)
// The SSE4.2 crc32 instruction computes the same CRC-32C 8 bytes at a time. Chosen at run time, so
// the prebuilt binary still runs on x86-64 machines without SSE4.2.
__attribute__((target("sse4.2"))) uint32_t Crc32cHardware(uint32_t crc, const uint8_t* p, size_t n) {
  uint64_t c = crc;
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = __builtin_ia32_crc32di(c, word);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return c32;
}

__attribute__((target("sse4.2"))) uint32_t CopyCrc32cHardware(uint32_t crc, uint8_t* d, const uint8_t* s,
                                                              size_t n) {
  uint64_t c = crc;
  while (n >= 32) {
    uint64_t w[4];
    std::memcpy(w, s, 32);
    c = __builtin_ia32_crc32di(c, w[0]);
    c = __builtin_ia32_crc32di(c, w[1]);
    c = __builtin_ia32_crc32di(c, w[2]);
    c = __builtin_ia32_crc32di(c, w[3]);
    std::memcpy(d, w, 32);
    s += 32;
    d += 32;
    n -= 32;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n--) {
    c32 = __builtin_ia32_crc32qi(c32, *s);
    *d++ = *s++;
  }
  return c32;
}

bool HasSse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#endif

}  // namespace

uint32_t CopyWithCrc32c(uint8_t* destination, const uint8_t* source, size_t length) {
#if defined(__x86_64__)
  if (HasSse42()) return ~CopyCrc32cHardware(~0u, destination, source, length);
#endif
  if (length) std::memcpy(destination, source, length);
  return Crc32c(destination, length);
}

uint32_t Crc32c(const uint8_t* data, size_t length) {
#if defined(__x86_64__)
  if (HasSse42()) return ~Crc32cHardware(~0u, data, length);
#endif
  return ~Crc32cPortable(~0u, data, length);
}

}  // namespace shmch
