// The machine's floor for what shm-channels does, in C with no JavaScript: built and run by
// bench/run.mjs on the same machine in the same run, so the table can show how far shm is from it.
//
//   spin ping-pong     two processes, one shared cache line, busy-waiting: the best possible RTT
//   spin-then-futex    spinning up to 50 us before sleeping on a futex (what a good wake path does)
//   futex ping-pong    sleeping on a futex every hop: the price of a wake-up of a sleeping thread
//   memcpy 5 MB        into a warm shared mapping (and into fresh pages: page faults included)
//   SPSC ring          one producer, one consumer process, 128-byte slots in a shared ring
//
// Prints one JSON object. cc -O2 -o floor floor.c (Linux only).
#define _GNU_SOURCE
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void futex_wait(_Atomic uint32_t* word, uint32_t value) {
  syscall(SYS_futex, word, FUTEX_WAIT, value, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t* word) { syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0); }

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

struct Shared {
  _Atomic uint32_t turn __attribute__((aligned(64)));  // whose turn: 0 pinger, 1 ponger
  _Atomic uint32_t stop;
};

static void* shared_map(size_t bytes) {
  void* p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    exit(1);
  }
  return p;
}

// Waits until *turn == want: spin for up to spin_ns, then sleep on the futex. spin_ns ==
// UINT64_MAX: spin only, yielding the CPU now and then (on a busy machine the other side may
// share our CPU and would otherwise wait a whole time slice).
static void await_turn(_Atomic uint32_t* turn, uint32_t want, uint64_t spin_ns) {
  if (spin_ns == UINT64_MAX) {
    for (uint32_t n = 0;; n++) {
      if (atomic_load_explicit(turn, memory_order_acquire) == want) return;
      relax();
      if ((n & 4095) == 4095) sched_yield();
    }
  }
  if (spin_ns) {
    uint64_t deadline = now_ns() + spin_ns;
    do {
      for (int i = 0; i < 64; i++) {
        if (atomic_load_explicit(turn, memory_order_acquire) == want) return;
        relax();
      }
    } while (now_ns() < deadline);
  }
  for (;;) {
    uint32_t v = atomic_load_explicit(turn, memory_order_acquire);
    if (v == want) return;
    futex_wait(turn, v);
  }
}

static int compare_u64(const void* a, const void* b) {
  uint64_t x = *(const uint64_t*)a, y = *(const uint64_t*)b;
  return x < y ? -1 : x > y;
}

// Median RTT in us of `trips` round trips; spin_ns = UINT64_MAX: spin only.
static double ping_pong(int trips, uint64_t spin_ns, int use_futex) {
  struct Shared* s = shared_map(sizeof *s);
  atomic_store(&s->turn, 0);
  pid_t child = fork();
  if (child == 0) {
    for (int i = 0; i < trips; i++) {
      await_turn(&s->turn, 1, spin_ns);
      atomic_store_explicit(&s->turn, 0, memory_order_release);
      if (use_futex) futex_wake(&s->turn);
    }
    _exit(0);
  }
  uint64_t* rtt = malloc(sizeof(uint64_t) * trips);
  for (int i = 0; i < trips; i++) {
    uint64_t t0 = now_ns();
    atomic_store_explicit(&s->turn, 1, memory_order_release);
    if (use_futex) futex_wake(&s->turn);
    await_turn(&s->turn, 0, spin_ns);
    rtt[i] = now_ns() - t0;
  }
  waitpid(child, NULL, 0);
  qsort(rtt, trips, sizeof *rtt, compare_u64);
  double median = rtt[trips / 2] / 1000.0;
  free(rtt);
  munmap(s, sizeof *s);
  return median;
}

static double memcpy_gbps(size_t bytes, int warm) {
  uint8_t* src = malloc(bytes);
  memset(src, 7, bytes);
  int reps = warm ? 20 : 5;
  uint64_t total = 0;
  for (int r = 0; r < reps; r++) {
    uint8_t* dst = shared_map(bytes);
    if (warm) memset(dst, 0, bytes);
    uint64_t t0 = now_ns();
    memcpy(dst, src, bytes);
    total += now_ns() - t0;
    munmap(dst, bytes);
  }
  free(src);
  return (double)bytes * reps / (double)total;  // bytes per ns = GB/s
}

#define RING_SLOTS 1024
#define SLOT_BYTES 128
struct Ring {
  _Atomic uint64_t head __attribute__((aligned(64)));  // written by the consumer
  _Atomic uint64_t tail __attribute__((aligned(64)));  // written by the producer
  uint8_t slots[RING_SLOTS][SLOT_BYTES] __attribute__((aligned(64)));
};

static double spsc_msgs_per_s(uint64_t messages) {
  struct Ring* r = shared_map(sizeof *r);
  pid_t child = fork();
  if (child == 0) {  // consumer
    uint64_t head = 0, sum = 0;
    uint8_t local[SLOT_BYTES];
    for (uint32_t idle = 0; head < messages;) {
      uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
      while (head < tail) {
        memcpy(local, r->slots[head % RING_SLOTS], SLOT_BYTES);
        sum += local[0];
        head++;
      }
      atomic_store_explicit(&r->head, head, memory_order_release);
      if (head == tail) {
        relax();
        if ((++idle & 4095) == 0) sched_yield();  // the producer may share our CPU
      }
    }
    _exit(sum == 0xffffffff ? 1 : 0);
  }
  uint8_t message[SLOT_BYTES];
  memset(message, 1, sizeof message);
  uint64_t t0 = now_ns();
  for (uint64_t tail = 0, idle = 0; tail < messages;) {
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    if (tail - head >= RING_SLOTS) {
      relax();
      if ((++idle & 4095) == 0) sched_yield();
      continue;
    }
    while (tail < messages && tail - head < RING_SLOTS) {
      memcpy(r->slots[tail % RING_SLOTS], message, SLOT_BYTES);
      tail++;
    }
    atomic_store_explicit(&r->tail, tail, memory_order_release);
  }
  waitpid(child, NULL, 0);
  double seconds = (now_ns() - t0) / 1e9;
  munmap(r, sizeof *r);
  return messages / seconds;
}

int main(void) {
  double spin = ping_pong(5000, UINT64_MAX, 0);
  double spin_futex = ping_pong(5000, 50000, 1);
  double futex = ping_pong(2000, 0, 1);
  double warm = memcpy_gbps(5000000, 1);
  double fresh = memcpy_gbps(5000000, 0);
  double ring = spsc_msgs_per_s(10000000);
  printf("{\"spinRttUs\": %.3f, \"spinThenFutexRttUs\": %.3f, \"futexRttUs\": %.3f, "
         "\"memcpy5MBWarmGBps\": %.2f, \"memcpy5MBFreshGBps\": %.2f, \"spscRingMsgsPerSec\": %.0f}\n",
         spin, spin_futex, futex, warm, fresh, ring);
  return 0;
}
