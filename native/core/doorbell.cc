#include "doorbell.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "errors.h"

namespace shmch {

Doorbells::Doorbells(std::string layer_name, uint32_t mode, bool allow_foreign)
    : layer_name_(std::move(layer_name)), mode_(mode), allow_foreign_(allow_foreign) {
  for (int& fd : writers_) fd = -1;
  // Node ignores SIGPIPE; a plain C++ host may not, and a write to a FIFO whose reader died
  // must not kill the sender.
  struct sigaction current;
  sigpipe_ignored_ = sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_IGN;
}

Doorbells::~Doorbells() {
  for (int& fd : writers_) {
    if (fd >= 0) close(fd);
    fd = -1;
  }
  CloseOwn();
}

std::string Doorbells::FifoPath(const std::string& layer_name, uint32_t slot) {
  return "/dev/shm/shmch-bell." + std::to_string(geteuid()) + "." + layer_name + "." +
         std::to_string(slot);
}

void Doorbells::UnlinkAll(const std::string& layer_name) {
  for (uint32_t i = 0; i < kMaxSlots; ++i) unlink(FifoPath(layer_name, i).c_str());
}

void Doorbells::OpenOwn(uint32_t index) {
  CloseOwn();
  std::string path = FifoPath(layer_name_, index);
  // An existing FIFO is normally the one an earlier instance in this slot made; it is checked
  // below like one someone else planted.
  if (mkfifo(path.c_str(), mode_ & 0777) != 0 && errno != EEXIST) {
    ThrowSystemError("mkfifo(" + path + ")", errno);
  }
  // O_RDWR: the FIFO never reports end-of-file while we hold it, and opening never blocks.
  int fd = open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) ThrowSystemError("open(" + path + ")", errno);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    ThrowSystemError("fstat(" + path + ")", e);
  }
  char buf[320];
  if (!allow_foreign_ && (st.st_uid != geteuid() || (st.st_mode & 0777 & ~mode_) != 0)) {
    // Another user could have planted it to ring or mute us, as with the segment itself.
    std::snprintf(buf, sizeof buf, "doorbell %s belongs to uid %u with mode %04o; refusing it",
                  path.c_str(), static_cast<unsigned>(st.st_uid), st.st_mode & 0777);
    close(fd);
    throw Error(ErrorCode::kPermission, buf);
  }
  if (!S_ISFIFO(st.st_mode)) {
    std::snprintf(buf, sizeof buf, "doorbell %s is not a FIFO; refusing it (remove it)", path.c_str());
    close(fd);
    throw Error(ErrorCode::kPermission, buf);
  }
  own_fd_ = fd;
}

void Doorbells::CloseOwn() {
  if (own_fd_ >= 0) close(own_fd_);
  own_fd_ = -1;
}

void Doorbells::DrainOwn() {
  if (own_fd_ < 0) return;
  char buf[256];
  while (read(own_fd_, buf, sizeof buf) == static_cast<ssize_t>(sizeof buf)) {
  }
}

int Doorbells::WriterFor(uint32_t index) noexcept {
  if (index >= kMaxSlots) return -1;
  if (writers_[index] >= 0) return writers_[index];
  std::string path;
  try {
    path = FifoPath(layer_name_, index);
  } catch (...) {
    return -1;
  }
  // ENXIO: nobody has it open for reading (its owner is gone); nothing to wake.
  int fd = open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) {
    close(fd);
    return -1;
  }
  writers_[index] = fd;
  return fd;
}

void Doorbells::DropWriter(uint32_t index) noexcept {
  if (index < kMaxSlots && writers_[index] >= 0) {
    close(writers_[index]);
    writers_[index] = -1;
  }
}

void Doorbells::Ring(Slot& slot, uint32_t index) noexcept {
  // Dekker handshake with the receiver's arming (seq_cst on both sides): it publishes `sleeping`
  // then looks at the bell; we publish the bell then look at `sleeping`. One of us sees the other.
  if (slot.bell.exchange(1, std::memory_order_seq_cst) != 0) return;  // rung already, not yet seen
  if (slot.sleeping.load(std::memory_order_seq_cst) == 0) return;     // it polls the bell itself
  int fd = WriterFor(index);
  if (fd < 0) {
    ring_failures_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const char byte = 1;
  ssize_t n;
  int error = 0;
  if (sigpipe_ignored_) {
    n = write(fd, &byte, 1);
    if (n < 0) error = errno;
  } else {
    // Block SIGPIPE around the write and consume the one it may raise.
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    n = write(fd, &byte, 1);
    if (n < 0) error = errno;
    if (error == EPIPE) {
      struct timespec zero = {0, 0};
      sigtimedwait(&pipe_set, nullptr, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
  // EAGAIN: the FIFO is full of earlier rings, so it is readable already.
  if (n == 1 || error == EAGAIN) return;
  ring_failures_.fetch_add(1, std::memory_order_relaxed);
  // EPIPE: its reader is gone (the slot's owner died); a later owner opens it afresh.
  DropWriter(index);
}

}  // namespace shmch
