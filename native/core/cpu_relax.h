// A spin-wait hint: lets the sibling hyperthread run while we poll shared memory.
#pragma once

namespace shmch {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace shmch
