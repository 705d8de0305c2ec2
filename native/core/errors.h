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
  kBusy,             // a live process held the segment lock past the caller's wait bound
};

const char* ErrorCodeName(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message, int holder_pid = 0)
      : std::runtime_error(message), code_(code), holder_pid_(holder_pid) {}
  ErrorCode code() const { return code_; }
  // kBusy: the pid the lock holder's slot recorded (informational; 0 when unknown).
  int holder_pid() const { return holder_pid_; }

 private:
  ErrorCode code_;
  int holder_pid_;
};

[[noreturn]] void ThrowSystemError(const std::string& what, int err);

}  // namespace shmch
