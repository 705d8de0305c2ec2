// The harness of the core's unit tests (native/core), with no test framework: TEST and CHECK
// macros, a registry that harness.cc's main() runs (one line per test, then "N passed, N
// failed"), and the fixtures every test file uses: a temporary layer name, small options,
// payloads, forked children.
//
//   core_tests            run every test
//   core_tests NAME...    run the tests whose name contains one of the arguments
//
// A test marked KNOWN_BUG_TEST reproduces a reported bug of the core: it counts as passed while
// its check fails, and as failed once the bug is fixed (then drop the marker).
//
// Each test uses its own layer name and removes its segment and doorbells (Layer::Destroy) however
// it ends. Crash recovery is tested for real: a forked child process opens the layer and SIGKILLs
// itself at a fault point (shmch::g_fault_point) while it holds the segment lock.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "arena.h"
#include "checksum.h"
#include "clock.h"
#include "doorbell.h"
#include "errors.h"
#include "fault_points.h"
#include "layer.h"
#include "layout.h"
#include "segment.h"
#include "shared_lock.h"

using shmch::Error;
using shmch::ErrorCode;
using shmch::Layer;
using shmch::LayerOptions;

// ---------------------------------------------------------------------------------------------
// Registry and checks.

struct CheckFailure {
  std::string message;
};

struct TestCase {
  const char* name;
  void (*fn)();
  const char* known_bug;  // non-null: the test is expected to fail (a known, reported bug)
};

// Every test of every file, in registration order (file by file, in link order).
std::vector<TestCase>& Registry();

struct Registrar {
  Registrar(const char* name, void (*fn)(), const char* known_bug) {
    Registry().push_back({name, fn, known_bug});
  }
};

[[noreturn]] void Fail(const char* file, int line, const std::string& what);

template <typename T>
std::string Show(const T& v) {
  std::ostringstream out;
  out << v;
  return out.str();
}
inline std::string Show(const std::string& v) { return "\"" + v + "\""; }
template <typename T>
std::string Show(const std::vector<T>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + Show(v[i]);
  return s + "]";
}

inline const char* CodeName(ErrorCode c) { return shmch::ErrorCodeName(c); }

#define TEST(name)                                                \
  static void name();                                             \
  static const Registrar registrar_##name(#name, &name, nullptr); \
  static void name()

// A test that demonstrates a known bug: it passes while the bug is there (some CHECK fails) and
// fails once the bug is fixed, so the marker gets removed.
#define KNOWN_BUG_TEST(name, why)                             \
  static void name();                                         \
  static const Registrar registrar_##name(#name, &name, why); \
  static void name()

#define CHECK(cond)                                            \
  do {                                                         \
    if (!(cond)) Fail(__FILE__, __LINE__, "CHECK(" #cond ")"); \
  } while (0)

#define CHECK_EQ(a, b)                                                               \
  do {                                                                               \
    const auto& check_a_ = (a);                                                      \
    const auto& check_b_ = (b);                                                      \
    if (!(check_a_ == check_b_)) {                                                   \
      Fail(__FILE__, __LINE__,                                                       \
           "CHECK_EQ(" #a ", " #b "): " + Show(check_a_) + " != " + Show(check_b_)); \
    }                                                                                \
  } while (0)

#define CHECK_THROWS(expr, expected_code)                                                        \
  do {                                                                                           \
    bool check_threw_ = false;                                                                   \
    try {                                                                                        \
      expr;                                                                                      \
    } catch (const Error& check_e_) {                                                            \
      check_threw_ = true;                                                                       \
      if (check_e_.code() != (expected_code)) {                                                  \
        Fail(__FILE__, __LINE__,                                                                 \
             std::string(#expr " threw ") + CodeName(check_e_.code()) + " (" + check_e_.what() + \
                 "), expected " + CodeName(expected_code));                                      \
      }                                                                                          \
    }                                                                                            \
    if (!check_threw_) {                                                                         \
      Fail(__FILE__, __LINE__,                                                                   \
           std::string(#expr " did not throw, expected ") + CodeName(expected_code));            \
    }                                                                                            \
  } while (0)

// The layer's own consistency check finds nothing.
#define CHECK_CLEAN(layer)                                                          \
  do {                                                                              \
    std::vector<std::string> check_problems_ = (layer).Verify();                    \
    if (!check_problems_.empty()) {                                                 \
      Fail(__FILE__, __LINE__, "Verify() of " #layer ": " + Show(check_problems_)); \
    }                                                                               \
  } while (0)

// ---------------------------------------------------------------------------------------------
// Fixtures.

// A unique layer name whose segment and doorbells are removed when it goes out of scope. Declare
// it before the layers that use it.
class TempName {
 public:
  TempName();
  ~TempName() { Layer::Destroy(name_); }
  TempName(const TempName&) = delete;
  TempName& operator=(const TempName&) = delete;
  const std::string& str() const { return name_; }
  // The segment's file in /dev/shm (the POSIX object "/shmch.<uid>.<name>").
  std::string path() const { return "/dev/shm" + shmch::Segment::ObjectName(name_); }

 private:
  std::string name_;
};

// Small tables: every test creates its own segment.
LayerOptions Options(const TempName& name);

// Deterministic payload `id` of `length` bytes, so a damaged or overlapping block is detected.
std::vector<uint8_t> Payload(uint32_t id, uint32_t length);

void SendText(Layer& layer, std::string_view channel, const std::string& text);
uint32_t GroupSendText(Layer& layer, std::string_view group, const std::string& text);
// Pops up to `wanted` messages of one channel, as strings.
std::vector<std::string> ReceiveText(Layer& layer, const std::string& channel, uint32_t wanted);
// prefix + from, ..., prefix + (to - 1).
std::vector<std::string> Texts(const std::string& prefix, int from, int to);
bool HasChannel(Layer& layer, const std::string& name);
// True when `fd` becomes readable within `timeout_ms`.
bool Readable(int fd, int timeout_ms);

// Runs `body` in a forked child process and returns how the child ended ("exit N", "SIGKILL",
// "signal N"), for a CHECK. With `quiet`, the child's stderr goes to /dev/null.
std::string RunChild(const std::function<void()>& body, bool quiet = false);
// A child that opens the layer and is expected to SIGKILL itself at the fault point it arms.
inline std::string RunChildThatDies(const std::function<void()>& body) { return RunChild(body); }

// A child that opens its own instance of the layer with `options`, arms fault point `point` and
// runs `op` on that instance: it is expected to SIGKILL itself there (returns "SIGKILL").
std::string DieAtFaultPoint(const LayerOptions& options, int point,
                            const std::function<void(Layer&)>& op);

// Overwrites `size` bytes at `offset` of a segment file.
void PokeSegment(const TempName& name, size_t offset, const void* data, size_t size);
