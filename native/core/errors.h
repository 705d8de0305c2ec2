// Typed failures of the core. The binding turns each into a JS Error with a stable `code`.
#pragma once

#include <stdexcept>
#include <string>

namespace shmch {

enum class ErrorCode {
  kInvalidArgument,  // bad name, size or option
  kChannelFull,      // the channel holds `capacity` messages
  kArenaFull,        // no room in the segment's message arena or node pool
  kTableFull,        // no free channel, group or membership record
  kTooLarge,         // message above maxMessageSize
  kVersionMismatch,  // segment made by another layout version or ABI
  kCorrupt,          // shared memory failed a bounds or consistency check
  kPermission,       // segment owned by another user or with a looser mode
  kNoSpace,          // /dev/shm cannot hold the segment
  kClosed,           // used after close()
  kNotFound,         // attach-only open of a layer that does not exist
  kSystem,           // an OS call failed
};

const char* ErrorCodeName(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] void ThrowSystemError(const std::string& what, int err);

}  // namespace shmch
