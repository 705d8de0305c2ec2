#include "doorbell.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "clock.h"
#include "cpu_relax.h"
#include "errors.h"

namespace shmch {

Doorbells::Doorbells(std::string layer_name, uint32_t mode, bool allow_foreign)
    : layer_name_(std::move(layer_name)), mode_(mode), allow_foreign_(allow_foreign) {
  for (auto& s : sems_) s.store(nullptr, std::memory_order_relaxed);
}

Doorbells::~Doorbells() {
  for (auto& s : sems_) {
    sem_t* sem = s.load(std::memory_order_relaxed);
    if (sem) sem_close(sem);
  }
}

std::string Doorbells::SemaphoreName(const std::string& layer_name, uint32_t slot) {
  return "/shmch." + std::to_string(geteuid()) + "." + layer_name + ".bell" + std::to_string(slot);
}

void Doorbells::UnlinkAll(const std::string& layer_name) {
  for (uint32_t i = 0; i < kMaxSlots; ++i) sem_unlink(SemaphoreName(layer_name, i).c_str());
}

sem_t* Doorbells::Open(uint32_t index) {
  sem_t* sem = sems_[index].load(std::memory_order_acquire);
  if (sem) return sem;
  std::string name = SemaphoreName(layer_name_, index);
  sem = sem_open(name.c_str(), O_CREAT | O_EXCL, mode_ & 0777, 0);
  if (sem == SEM_FAILED && errno == EEXIST) {
    // It exists already: normally a doorbell an earlier instance in this slot made. Only use it
    // if it is ours, as the segment is: another user could have planted it to ring or mute us.
    struct stat st;
    std::string path = "/dev/shm/sem." + name.substr(1);
    if (!allow_foreign_ && stat(path.c_str(), &st) == 0 &&
        (st.st_uid != geteuid() || (st.st_mode & 0777 & ~mode_) != 0)) {
      char buf[256];
      std::snprintf(buf, sizeof buf, "doorbell %s belongs to uid %u with mode %04o; refusing it",
                    path.c_str(), static_cast<unsigned>(st.st_uid), st.st_mode & 0777);
      throw Error(ErrorCode::kPermission, buf);
    }
    sem = sem_open(name.c_str(), 0);
  }
  if (sem == SEM_FAILED) ThrowSystemError("sem_open(" + name + ")", errno);
  sem_t* expected = nullptr;
  if (!sems_[index].compare_exchange_strong(expected, sem, std::memory_order_acq_rel)) {
    sem_close(sem);
    return expected;
  }
  return sem;
}

void Doorbells::Ring(Slot& slot, uint32_t index) {
  if (slot.bell.exchange(1, std::memory_order_seq_cst) != 0) return;  // already rung, not yet seen
  if (slot.sleeping.load(std::memory_order_seq_cst) != 0) sem_post(Open(index));
}

bool Doorbells::Wait(Slot& slot, uint32_t index, uint64_t spin_ns, const std::atomic<bool>& stop) {
  sem_t* sem = Open(index);
  if (spin_ns > 0) {
    uint64_t deadline = MonotonicNs() + spin_ns;
    do {
      for (int i = 0; i < 64; ++i) {
        if (slot.bell.load(std::memory_order_relaxed) != 0) {
          slot.bell.exchange(0, std::memory_order_acq_rel);
          return true;
        }
        CpuRelax();
      }
      if (stop.load(std::memory_order_relaxed)) return false;
    } while (MonotonicNs() < deadline);
  }
  // Dekker-style handshake with Ring(): we publish `sleeping` then look at the bell; a sender
  // publishes the bell then looks at `sleeping`. At least one of us sees the other.
  slot.sleeping.store(1, std::memory_order_seq_cst);
  if (slot.bell.exchange(0, std::memory_order_seq_cst) != 0) {
    slot.sleeping.store(0, std::memory_order_relaxed);
    return true;
  }
  while (sem_wait(sem) != 0 && errno == EINTR) {
  }
  slot.sleeping.store(0, std::memory_order_relaxed);
  bool rung = slot.bell.exchange(0, std::memory_order_acq_rel) != 0;
  return rung || !stop.load(std::memory_order_acquire);
}

void Doorbells::Interrupt(uint32_t index) { sem_post(Open(index)); }

}  // namespace shmch
