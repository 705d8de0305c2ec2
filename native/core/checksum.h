// CRC-32C of message payloads: written by the sender, checked by every receiver on its private
// copy, so bytes scribbled into the arena reach nobody as a message.
#pragma once

#include <cstddef>
#include <cstdint>

namespace shmch {

uint32_t Crc32c(const uint8_t* data, size_t length);

}  // namespace shmch
