// Scope of one operation on the segment: holds the shared lock, rebuilds derived state first if
// the previous holder died inside its critical section, and rings the collected doorbells only
// after the lock is released (a woken receiver should not find the lock still held). Corruption
// met on the way is repaired (derived state rebuilt, broken queues cut) before the lock is let go.
#pragma once

#include "fault_points.h"
#include "layer.h"
#include "lock_hold.h"

namespace shmch {

class Critical {
 public:
  // `op` names the operation in this instance's lock hold times (lock_hold.h).
  explicit Critical(Layer& layer, LockOp op = LockOp::kOther) : layer_(layer) { layer_.LockSegment(op); }
  ~Critical() {
    layer_.RepairIfCorrupted();
    layer_.UnlockSegment();
    // A sender killed here published without ringing: receivers look again on their next
    // housekeeping tick. Ringing never throws (a destructor must not).
    FAULT_POINT(20);
    layer_.RingPending();
  }
  Critical(const Critical&) = delete;
  Critical& operator=(const Critical&) = delete;

 private:
  Layer& layer_;
};

}  // namespace shmch
