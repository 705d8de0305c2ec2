#include "checksum.h"

#include <cstring>

#if defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

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

#if defined(__x86_64__) || defined(__aarch64__)
// Both architectures the package ships have an instruction for CRC-32C: SSE4.2's crc32 on
// x86-64, the CRC extension's crc32c* on arm64 (optional in Armv8.0, present on every server
// core). Chosen at run time, so a binary still runs on a CPU without it (the table above).
#if defined(__x86_64__)
#define SHMCH_CRC_TARGET __attribute__((target("sse4.2")))
SHMCH_CRC_TARGET inline uint64_t Crc8Bytes(uint64_t c, uint64_t w) { return __builtin_ia32_crc32di(c, w); }
SHMCH_CRC_TARGET inline uint32_t Crc4Bytes(uint32_t c, uint32_t w) { return __builtin_ia32_crc32si(c, w); }
SHMCH_CRC_TARGET inline uint32_t Crc2Bytes(uint32_t c, uint16_t w) { return __builtin_ia32_crc32hi(c, w); }
SHMCH_CRC_TARGET inline uint32_t Crc1Byte(uint32_t c, uint8_t w) { return __builtin_ia32_crc32qi(c, w); }
bool HasCrcInstruction() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#else
#define SHMCH_CRC_TARGET __attribute__((target("+crc")))
SHMCH_CRC_TARGET inline uint64_t Crc8Bytes(uint64_t c, uint64_t w) {
  return __builtin_aarch64_crc32cx(static_cast<uint32_t>(c), w);
}
SHMCH_CRC_TARGET inline uint32_t Crc4Bytes(uint32_t c, uint32_t w) { return __builtin_aarch64_crc32cw(c, w); }
SHMCH_CRC_TARGET inline uint32_t Crc2Bytes(uint32_t c, uint16_t w) { return __builtin_aarch64_crc32ch(c, w); }
SHMCH_CRC_TARGET inline uint32_t Crc1Byte(uint32_t c, uint8_t w) { return __builtin_aarch64_crc32cb(c, w); }
bool HasCrcInstruction() {
  static const bool has = (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
  return has;
}
#endif

// One crc32 takes 3 cycles but a new one can start every cycle: a single chain of them runs at a
// third of the instruction's rate (about 7 GB/s here, slower than the copy it rides along with,
// and the larger part of a 5 MB message's copy time). So a long run is cut into blocks of three
// stripes, each stripe gets a chain of its own, and the three are joined by the CRC's linearity:
//   crc(c, A || B) = zeros(crc(c, A), |B|) ^ crc(0, B)
// where zeros(c, n) is the register after n zero bytes, a linear map of c applied by table.
constexpr size_t kStripeBytes = 4096;

// zeros(c, kStripeBytes) by bytes of c: the map is linear, so it is the XOR of its values on the
// bytes of c, each looked up.
struct StripeShift {
  uint32_t by_byte[4][256];
};

SHMCH_CRC_TARGET uint64_t AfterZeros(uint64_t c, size_t n) {
  for (size_t i = 0; i < n; i += 8) c = Crc8Bytes(c, 0);
  return c;
}

SHMCH_CRC_TARGET StripeShift MakeStripeShift() {
  uint32_t of_bit[32];
  for (int bit = 0; bit < 32; ++bit) {
    of_bit[bit] = static_cast<uint32_t>(AfterZeros(uint64_t{1} << bit, kStripeBytes));
  }
  StripeShift shift{};
  for (int k = 0; k < 4; ++k) {
    for (uint32_t b = 0; b < 256; ++b) {
      uint32_t v = 0;
      for (int j = 0; j < 8; ++j) {
        if (b & (1u << j)) v ^= of_bit[8 * k + j];
      }
      shift.by_byte[k][b] = v;
    }
  }
  return shift;
}

uint64_t ShiftOverStripe(uint64_t c) {
  static const StripeShift shift = MakeStripeShift();
  return shift.by_byte[0][c & 0xff] ^ shift.by_byte[1][(c >> 8) & 0xff] ^
         shift.by_byte[2][(c >> 16) & 0xff] ^ shift.by_byte[3][(c >> 24) & 0xff];
}

// CRC-32C register `crc` over `n` bytes from `s`, copying them to `d` when kCopy: each word is
// loaded once, and the word checksummed is the word stored (a writer changing the source under
// us cannot make the copy differ from what was checked). A small message (the common case) goes
// straight to the 32- and 8-byte steps, and its last 0-7 bytes take at most three steps (4, 2,
// 1 bytes): byte by byte, a 127-byte tail of 31 bytes cost as much as the 96 bytes before it.
template <bool kCopy>
SHMCH_CRC_TARGET uint32_t Crc32cRun(uint32_t crc, uint8_t* d, const uint8_t* s, size_t n) {
  uint64_t c = crc;
  for (; n >= 3 * kStripeBytes; n -= 3 * kStripeBytes) {
    uint64_t c1 = 0, c2 = 0;
    for (size_t i = 0; i < kStripeBytes; i += 8) {
      uint64_t w0, w1, w2;
      std::memcpy(&w0, s + i, 8);
      std::memcpy(&w1, s + kStripeBytes + i, 8);
      std::memcpy(&w2, s + 2 * kStripeBytes + i, 8);
      c = Crc8Bytes(c, w0);
      c1 = Crc8Bytes(c1, w1);
      c2 = Crc8Bytes(c2, w2);
      if (kCopy) {
        std::memcpy(d + i, &w0, 8);
        std::memcpy(d + kStripeBytes + i, &w1, 8);
        std::memcpy(d + 2 * kStripeBytes + i, &w2, 8);
      }
    }
    c = ShiftOverStripe(ShiftOverStripe(c) ^ c1) ^ c2;
    s += 3 * kStripeBytes;
    if (kCopy) d += 3 * kStripeBytes;
  }
  for (; n >= 32; n -= 32) {
    uint64_t w[4];
    std::memcpy(w, s, 32);
    c = Crc8Bytes(c, w[0]);
    c = Crc8Bytes(c, w[1]);
    c = Crc8Bytes(c, w[2]);
    c = Crc8Bytes(c, w[3]);
    if (kCopy) {
      std::memcpy(d, w, 32);
      d += 32;
    }
    s += 32;
  }
  for (; n >= 8; n -= 8) {
    uint64_t w;
    std::memcpy(&w, s, 8);
    c = Crc8Bytes(c, w);
    if (kCopy) {
      std::memcpy(d, &w, 8);
      d += 8;
    }
    s += 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  if (n & 4) {
    uint32_t w;
    std::memcpy(&w, s, 4);
    c32 = Crc4Bytes(c32, w);
    if (kCopy) {
      std::memcpy(d, &w, 4);
      d += 4;
    }
    s += 4;
  }
  if (n & 2) {
    uint16_t w;
    std::memcpy(&w, s, 2);
    c32 = Crc2Bytes(c32, w);
    if (kCopy) {
      std::memcpy(d, &w, 2);
      d += 2;
    }
    s += 2;
  }
  if (n & 1) {
    const uint8_t byte = *s;
    c32 = Crc1Byte(c32, byte);
    if (kCopy) *d = byte;
  }
  return c32;
}
#endif

}  // namespace

uint32_t CopyWithCrc32c(uint8_t* destination, const uint8_t* source, size_t length,
                        uint32_t previous) {
#if defined(__x86_64__) || defined(__aarch64__)
  if (HasCrcInstruction()) return ~Crc32cRun<true>(~previous, destination, source, length);
#endif
  if (length) std::memcpy(destination, source, length);
  return ~Crc32cPortable(~previous, destination, length);
}

uint32_t Crc32c(const uint8_t* data, size_t length) {
#if defined(__x86_64__) || defined(__aarch64__)
  if (HasCrcInstruction()) return ~Crc32cRun<false>(~0u, nullptr, data, length);
#endif
  return ~Crc32cPortable(~0u, data, length);
}

}  // namespace shmch
