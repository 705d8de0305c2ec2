// CRC-32C of message payloads: written by the sender, checked by every receiver on its private
// copy, so bytes scribbled into the arena reach nobody as a message.
#pragma once

#include <cstddef>
#include <cstdint>

namespace shmch {

uint32_t Crc32c(const uint8_t* data, size_t length);

// Copies `length` bytes and returns the CRC-32C of what was copied, in one pass over memory:
// a large message costs one read and one write, not a copy plus a second read to checksum it.
// `previous`: the CRC-32C of bytes before these (0 for none), so that a payload copied in pieces
// gets the CRC of the whole.
uint32_t CopyWithCrc32c(uint8_t* destination, const uint8_t* source, size_t length,
                        uint32_t previous = 0);

}  // namespace shmch
