// What a sender does after a send was refused for lack of room (a full channel, a full arena).
// Such a send can only succeed once a receiver has run; a sender retrying at once (a JS retry
// loop on setImmediate, the adapter's fast retries) would otherwise keep the CPU the receivers
// need. With more busy processes than cores the scheduler gives each an equal share, so 8
// retrying producers left their one consumer about 1/9 of a 2-core machine (bench W5: 8
// producers 0.13x the rate of 1). So from the second refusal in a row an instance yields its CPU
// (sched_yield) once the lock is released: the retry runs after the processes waiting for a CPU,
// receivers among them. A one-off refusal costs nothing; on a machine with a CPU to spare
// sched_yield returns at once; nothing ever sleeps (send never blocks).
#pragma once

#include <sched.h>

#include <cstdint>

#include "errors.h"

namespace shmch {

class RefusalBackoff {
 public:
  static constexpr bool IsForRoom(ErrorCode code) {
    return code == ErrorCode::kChannelFull || code == ErrorCode::kArenaFull;
  }
  void Sent() { refused_in_a_row_ = 0; }
  // Called after the lock was released.
  void Refused() {
    if (++refused_in_a_row_ >= 2) {
      refused_in_a_row_ = 2;  // no wrap-around
      sched_yield();
      ++yields_;
    }
  }
  uint64_t yields() const { return yields_; }

 private:
  uint32_t refused_in_a_row_ = 0;
  uint64_t yields_ = 0;
};

}  // namespace shmch
