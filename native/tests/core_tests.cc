// Unit tests of the shm-channels core (native/core), with no test framework: a CHECK macro, a
// registry, and main() printing one line per test and a last line "N passed, N failed".
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
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <signal.h>
#include <sys/mman.h>
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
// The harness.

namespace {

struct CheckFailure {
  std::string message;
};

struct TestCase {
  const char* name;
  void (*fn)();
  const char* known_bug;  // non-null: the test is expected to fail (a known, reported bug)
};

std::vector<TestCase>& Registry() {
  static std::vector<TestCase> tests;
  return tests;
}

struct Registrar {
  Registrar(const char* name, void (*fn)(), const char* known_bug) {
    Registry().push_back({name, fn, known_bug});
  }
};

[[noreturn]] void Fail(const char* file, int line, const std::string& what) {
  std::ostringstream out;
  out << file << ":" << line << ": " << what;
  throw CheckFailure{out.str()};
}

template <typename T>
std::string Show(const T& v) {
  std::ostringstream out;
  out << v;
  return out.str();
}
std::string Show(const std::string& v) { return "\"" + v + "\""; }
template <typename T>
std::string Show(const std::vector<T>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + Show(v[i]);
  return s + "]";
}

const char* CodeName(ErrorCode c) { return shmch::ErrorCodeName(c); }

}  // namespace

#define TEST(name)                                                \
  static void name();                                             \
  static const Registrar registrar_##name(#name, &name, nullptr); \
  static void name()

// A test that demonstrates a known bug: it passes while the bug is there (some CHECK fails) and
// fails once the bug is fixed, so the marker gets removed.
#define KNOWN_BUG_TEST(name, why)                              \
  static void name();                                          \
  static const Registrar registrar_##name(#name, &name, why); \
  static void name()

#define CHECK(cond)                                          \
  do {                                                       \
    if (!(cond)) Fail(__FILE__, __LINE__, "CHECK(" #cond ")"); \
  } while (0)

#define CHECK_EQ(a, b)                                                                    \
  do {                                                                                    \
    const auto& check_a_ = (a);                                                           \
    const auto& check_b_ = (b);                                                           \
    if (!(check_a_ == check_b_)) {                                                        \
      Fail(__FILE__, __LINE__,                                                            \
           "CHECK_EQ(" #a ", " #b "): " + Show(check_a_) + " != " + Show(check_b_)); \
    }                                                                                     \
  } while (0)

#define CHECK_THROWS(expr, expected_code)                                                    \
  do {                                                                                       \
    bool check_threw_ = false;                                                               \
    try {                                                                                    \
      expr;                                                                                  \
    } catch (const Error& check_e_) {                                                        \
      check_threw_ = true;                                                                   \
      if (check_e_.code() != (expected_code)) {                                              \
        Fail(__FILE__, __LINE__,                                                             \
             std::string(#expr " threw ") + CodeName(check_e_.code()) + " (" + check_e_.what() + \
                 "), expected " + CodeName(expected_code));                                  \
      }                                                                                      \
    }                                                                                        \
    if (!check_threw_) {                                                                     \
      Fail(__FILE__, __LINE__,                                                               \
           std::string(#expr " did not throw, expected ") + CodeName(expected_code));        \
    }                                                                                        \
  } while (0)

// The layer's own consistency check finds nothing.
#define CHECK_CLEAN(layer)                                                           \
  do {                                                                               \
    std::vector<std::string> check_problems_ = (layer).Verify();                     \
    if (!check_problems_.empty()) {                                                  \
      Fail(__FILE__, __LINE__, "Verify() of " #layer ": " + Show(check_problems_)); \
    }                                                                                \
  } while (0)

// ---------------------------------------------------------------------------------------------
// Helpers.

namespace {

// A unique layer name whose segment and doorbells are removed when it goes out of scope. Declare
// it before the layers that use it.
class TempName {
 public:
  TempName() {
    static int counter = 0;
    name_ = "ct-" + std::to_string(getpid()) + "-" + std::to_string(++counter);
    Layer::Destroy(name_);
  }
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
LayerOptions Options(const TempName& name) {
  LayerOptions o;
  o.segment.name = name.str();
  o.segment.size = 2u << 20;
  o.segment.max_channels = 128;
  o.segment.max_groups = 32;
  o.segment.max_members = 256;
  o.segment.max_nodes = 2048;
  o.segment.max_message_size = 256u << 10;
  o.capacity = 100;
  return o;
}

// Deterministic payload `id` of `length` bytes, so a damaged or overlapping block is detected.
std::vector<uint8_t> Payload(uint32_t id, uint32_t length) {
  std::vector<uint8_t> v(length);
  for (uint32_t j = 0; j < length; ++j) v[j] = static_cast<uint8_t>(id * 131u + j * 7u + (j >> 8));
  return v;
}

void SendText(Layer& layer, std::string_view channel, const std::string& text) {
  layer.Send(channel, reinterpret_cast<const uint8_t*>(text.data()), static_cast<uint32_t>(text.size()));
}

uint32_t GroupSendText(Layer& layer, std::string_view group, const std::string& text) {
  return layer.GroupSend(group, reinterpret_cast<const uint8_t*>(text.data()),
                         static_cast<uint32_t>(text.size()));
}

// Pops up to `wanted` messages of one channel, as strings.
std::vector<std::string> ReceiveText(Layer& layer, const std::string& channel, uint32_t wanted) {
  shmch::ReceivedBatch batch;
  layer.Receive({{channel, wanted}}, batch);
  std::vector<std::string> out;
  size_t at = 0;
  for (size_t i = 0; i < batch.request_of.size(); ++i) {
    out.emplace_back(reinterpret_cast<const char*>(batch.bytes.data()) + at, batch.length_of[i]);
    at += batch.length_of[i];
  }
  return out;
}

std::vector<std::string> Texts(const std::string& prefix, int from, int to) {
  std::vector<std::string> v;
  for (int i = from; i < to; ++i) v.push_back(prefix + std::to_string(i));
  return v;
}

bool HasChannel(Layer& layer, const std::string& name) {
  for (const auto& c : layer.ListChannels(100000))
    if (c.name == name) return true;
  return false;
}

// Runs `body` in a forked child process and returns how the child ended ("exit N", "SIGKILL",
// "signal N"), for a CHECK. With `quiet`, the child's stderr goes to /dev/null.
std::string RunChild(const std::function<void()>& body, bool quiet = false) {
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return "fork failed";
  if (pid == 0) {
    if (quiet) {
      int null_fd = open("/dev/null", O_WRONLY);
      if (null_fd >= 0) dup2(null_fd, 2);
    }
    try {
      body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      _exit(3);
    }
    _exit(4);  // the body neither exited nor died
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status)) {
    return WTERMSIG(status) == SIGKILL ? "SIGKILL" : "signal " + std::to_string(WTERMSIG(status));
  }
  return "exit " + std::to_string(WEXITSTATUS(status));
}

// A child that opens the layer and is expected to SIGKILL itself at the fault point it arms.
std::string RunChildThatDies(const std::function<void()>& body) { return RunChild(body); }

// Overwrites `size` bytes at `offset` of a segment file.
void PokeSegment(const TempName& name, size_t offset, const void* data, size_t size) {
  int fd = open(name.path().c_str(), O_RDWR);
  if (fd < 0) throw std::runtime_error("open " + name.path() + ": " + std::strerror(errno));
  ssize_t n = pwrite(fd, data, size, static_cast<off_t>(offset));
  close(fd);
  if (n != static_cast<ssize_t>(size)) throw std::runtime_error("pwrite " + name.path());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Queues.

TEST(queue_send_receive_in_order) {
  TempName name;
  Layer layer(Options(name));
  for (int i = 0; i < 50; ++i) SendText(layer, "q", "m" + std::to_string(i));
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveText(layer, "q", 20), Texts("m", 0, 20));
  CHECK_EQ(ReceiveText(layer, "q", 100), Texts("m", 20, 50));
  CHECK(ReceiveText(layer, "q", 5).empty());
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.messages_sent, 50u);
  CHECK_EQ(s.messages_received, 50u);
  CHECK_EQ(s.queued, 0u);
  CHECK_EQ(s.arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(queue_payloads_of_many_sizes_survive) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 1000;
  Layer layer(o);
  const uint32_t sizes[] = {1, 47, 48, 49, 63, 64, 65, 1000, 4096, 65536, 200000};
  uint32_t id = 0;
  for (uint32_t size : sizes) {
    auto p = Payload(id++, size);
    layer.Send("sizes", p.data(), size);
  }
  CHECK_CLEAN(layer);
  shmch::ReceivedBatch batch;
  layer.Receive({{"sizes", 100}}, batch);
  CHECK_EQ(batch.length_of.size(), std::size(sizes));
  size_t at = 0;
  for (uint32_t i = 0; i < std::size(sizes); ++i) {
    CHECK_EQ(batch.length_of[i], sizes[i]);
    auto expected = Payload(i, sizes[i]);
    CHECK(std::equal(expected.begin(), expected.end(), batch.bytes.begin() + at));
    at += sizes[i];
  }
  CHECK_CLEAN(layer);
}

// Zero-length messages are legal (a custom serializer may produce them), and an empty buffer's
// data pointer may be null, as std::vector's and an empty Uint8Array's are. Runs in a child
// process with stderr silenced, so a sanitizer abort is a plain failure here.
static void EmptyPayloadsBody() {
  TempName name;
  std::string how = RunChild([&] {
    Layer layer(Options(name));
    std::vector<uint8_t> empty;
    layer.Send("empty", empty.data(), 0);
    layer.Send("empty", empty.data(), 0);
    shmch::ReceivedBatch batch;
    layer.Receive({{"empty", 5}}, batch);
    if (batch.length_of != std::vector<uint32_t>{0, 0} || !batch.bytes.empty()) _exit(6);
    if (!layer.Verify().empty()) _exit(7);
    _exit(0);
  }, true);
  CHECK_EQ(how, std::string("exit 0"));
}
// Regression: Send() -> StoreBlock() called memcpy(payload, nullptr, 0) and Receive() called
// memcpy(out.bytes.data() /* nullptr */, ..., 0): undefined behaviour, which UBSan reports as "null
// pointer passed as argument 1/2, which is declared to never be null".
TEST(queue_empty_payloads) { EmptyPayloadsBody(); }

TEST(queue_two_instances_share_one_segment) {
  TempName name;
  Layer a(Options(name));
  Layer b(Options(name));
  CHECK(a.slot_index() != b.slot_index());
  CHECK_EQ(a.Stats().slots_attached, 2u);
  SendText(a, "shared", "from a");
  SendText(b, "shared", "from b");
  CHECK_EQ(ReceiveText(b, "shared", 10), (std::vector<std::string>{"from a", "from b"}));
  CHECK_CLEAN(a);
  b.Close();
  CHECK_THROWS(SendText(b, "shared", "x"), ErrorCode::kClosed);
  CHECK_EQ(a.Stats().slots_attached, 1u);
  CHECK_CLEAN(a);
}

TEST(queue_batch_receive_over_several_channels) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "a", "a0");
  SendText(layer, "a", "a1");
  SendText(layer, "a", "a2");
  SendText(layer, "b", "b0");
  shmch::ReceivedBatch batch;
  layer.Receive({{"a", 2}, {"b", 3}, {"c", 1}}, batch);
  CHECK_EQ(batch.request_of, (std::vector<uint32_t>{0, 0, 1}));
  CHECK_EQ(batch.length_of, (std::vector<uint32_t>{2, 2, 2}));
  CHECK_EQ(std::string(batch.bytes.begin(), batch.bytes.end()), std::string("a0a1b0"));
  // Short requests ("b", "c") registered this instance as a waiter: their records exist.
  CHECK(HasChannel(layer, "c"));
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveText(layer, "a", 5), (std::vector<std::string>{"a2"}));
  CHECK_CLEAN(layer);
}

// Regression (layer.cc, Layer::Receive): a request with wanted == 0 took the "satisfied" branch,
// which cleared our waiter bit on segment_->channel(index) without checking index: for a channel
// that does not exist (index == kNil) it threw kCorrupt although the segment was fine.
TEST(queue_receive_wanting_nothing_from_an_unknown_channel) {
  TempName name;
  Layer layer(Options(name));
  shmch::ReceivedBatch batch;
  layer.Receive({{"unknown", 0}}, batch);
  CHECK(batch.request_of.empty());
  SendText(layer, "known", "x");
  layer.Receive({{"known", 0}}, batch);
  CHECK(batch.request_of.empty());
  CHECK_CLEAN(layer);
}

TEST(queue_capacity_gives_channel_full) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 5;
  o.channel_capacity = {{"big.*", 8}, {"big.small", 1}};  // first match wins
  Layer layer(o);
  for (int i = 0; i < 5; ++i) SendText(layer, "small", "s" + std::to_string(i));
  CHECK_THROWS(SendText(layer, "small", "s5"), ErrorCode::kChannelFull);
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveText(layer, "small", 1), (std::vector<std::string>{"s0"}));
  SendText(layer, "small", "s5");
  CHECK_THROWS(SendText(layer, "small", "s6"), ErrorCode::kChannelFull);
  CHECK_EQ(ReceiveText(layer, "small", 10), Texts("s", 1, 6));

  for (int i = 0; i < 8; ++i) SendText(layer, "big.small", "b" + std::to_string(i));
  CHECK_THROWS(SendText(layer, "big.small", "b8"), ErrorCode::kChannelFull);
  // A refused send to a channel nobody else uses leaves no record behind.
  CHECK_THROWS(SendText(layer, "other", std::string(300u << 10, 'x')), ErrorCode::kTooLarge);
  CHECK(!HasChannel(layer, "other"));
  CHECK_EQ(layer.Stats().queued, 8u);
  CHECK_CLEAN(layer);
}

// backpressure.h: a producer retrying on a full channel gives its CPU to the receivers from the
// second refusal in a row on; a one-off refusal, a refusal for another reason and any queued
// message reset that.
TEST(queue_repeated_refusals_yield_the_cpu) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 1;
  Layer layer(o);
  SendText(layer, "full", "queued");
  CHECK_THROWS(SendText(layer, "full", "refused"), ErrorCode::kChannelFull);
  CHECK_EQ(layer.refusal_yields(), 0u);
  CHECK_THROWS(SendText(layer, "full", "refused"), ErrorCode::kChannelFull);
  CHECK_THROWS(SendText(layer, "full", "refused"), ErrorCode::kChannelFull);
  CHECK_EQ(layer.refusal_yields(), 2u);
  // Not for lack of room: no yield, and the streak goes on.
  CHECK_THROWS(SendText(layer, "other", std::string(300u << 10, 'x')), ErrorCode::kTooLarge);
  CHECK_EQ(layer.refusal_yields(), 2u);
  CHECK_EQ(ReceiveText(layer, "full", 1), (std::vector<std::string>{"queued"}));
  SendText(layer, "full", "queued again");  // a queued message ends the streak
  CHECK_THROWS(SendText(layer, "full", "refused"), ErrorCode::kChannelFull);
  CHECK_EQ(layer.refusal_yields(), 2u);
  CHECK_THROWS(SendText(layer, "full", "refused"), ErrorCode::kChannelFull);
  CHECK_EQ(layer.refusal_yields(), 3u);
  // The lock is free again after every refusal: another instance sends at once.
  Layer other(Options(name));
  SendText(other, "elsewhere", "x");
  CHECK_CLEAN(layer);
}

TEST(queue_expiry_drops_old_messages) {
  TempName name;
  LayerOptions o = Options(name);
  o.expiry_ms = 300;  // long enough that the first sends are still fresh on a loaded machine
  o.capacity = 3;
  Layer layer(o);
  for (int i = 0; i < 3; ++i) SendText(layer, "old", "x");
  CHECK_THROWS(SendText(layer, "old", "x"), ErrorCode::kChannelFull);
  usleep(350'000);
  // Expired heads are dropped on send, so the channel has room again.
  SendText(layer, "old", "fresh-but-expiring");
  usleep(350'000);
  CHECK(ReceiveText(layer, "old", 10).empty());
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.messages_expired, 4u);
  CHECK_EQ(s.messages_received, 0u);
  CHECK_EQ(s.queued, 0u);
  CHECK_EQ(s.arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(queue_expiry_is_per_message) {
  TempName name;
  LayerOptions slow = Options(name);
  LayerOptions fast = Options(name);
  fast.expiry_ms = 1;
  Layer a(slow);
  Layer b(fast);
  SendText(b, "mixed", "short-lived");
  SendText(a, "mixed", "long-lived");
  usleep(20'000);
  CHECK_EQ(ReceiveText(a, "mixed", 10), (std::vector<std::string>{"long-lived"}));
  CHECK_EQ(a.Stats().messages_expired, 1u);
  CHECK_CLEAN(a);
}

TEST(queue_invalid_arguments) {
  TempName name;
  Layer layer(Options(name));
  CHECK_THROWS(SendText(layer, "", "x"), ErrorCode::kInvalidArgument);
  CHECK_THROWS(SendText(layer, "a b", "x"), ErrorCode::kInvalidArgument);
  CHECK_THROWS(SendText(layer, "a!b!c", "x"), ErrorCode::kInvalidArgument);
  CHECK_THROWS(SendText(layer, std::string(shmch::kMaxNameLength + 1, 'a'), "x"), ErrorCode::kInvalidArgument);
  SendText(layer, std::string(shmch::kMaxNameLength, 'a'), "longest name");
  SendText(layer, "process.local!abc", "one bang is fine");
  CHECK_THROWS(layer.GroupAdd("g!x", "c"), ErrorCode::kInvalidArgument);
  CHECK_THROWS(GroupSendText(layer, "", "x"), ErrorCode::kInvalidArgument);
  CHECK_THROWS(SendText(layer, "c", std::string((256u << 10) + 1, 'x')), ErrorCode::kTooLarge);
  CHECK_THROWS(Layer::ValidateName("x y", true, "channel"), ErrorCode::kInvalidArgument);
  CHECK_THROWS(shmch::Segment::ValidateLayerName("bad/name"), ErrorCode::kInvalidArgument);
  CHECK_CLEAN(layer);
  layer.Close();
  CHECK_THROWS(SendText(layer, "c", "x"), ErrorCode::kClosed);
  CHECK_THROWS(layer.Verify(), ErrorCode::kClosed);
}

TEST(queue_doorbell_rings_a_waiting_instance) {
  TempName name;
  Layer receiver(Options(name));
  Layer sender(Options(name));
  CHECK(ReceiveText(receiver, "bell", 1).empty());  // registers the receiver as a waiter
  SendText(sender, "bell", "ding");
  CHECK(receiver.TakeBell());
  CHECK(!receiver.TakeBell());
  CHECK_EQ(ReceiveText(receiver, "bell", 1), (std::vector<std::string>{"ding"}));
  CHECK_CLEAN(sender);
}

// A receive cancelled in JS without its wait being withdrawn left the record pinned forever: the
// next Maintain, told what this instance still waits on, drops the rest.
TEST(maintain_drops_waits_the_instance_no_longer_has) {
  TempName name;
  Layer receiver(Options(name));
  Layer other(Options(name));
  for (int i = 0; i < 10; ++i) CHECK(ReceiveText(receiver, "w" + std::to_string(i), 1).empty());
  CHECK(ReceiveText(other, "w0", 1).empty());  // another instance's wait is not ours to drop
  CHECK_EQ(receiver.Stats().channels, 10u);
  std::vector<std::string> still_waiting{"w3", "never-registered"};
  CHECK(receiver.Maintain(&still_waiting));
  CHECK_EQ(receiver.Stats().channels, 2u);
  CHECK(HasChannel(receiver, "w0"));
  CHECK(HasChannel(receiver, "w3"));
  // The kept wait still works: a send rings the receiver.
  SendText(other, "w3", "kept");
  CHECK(receiver.TakeBell());
  CHECK_EQ(ReceiveText(receiver, "w3", 1), (std::vector<std::string>{"kept"}));
  // Without a list Maintain leaves waits alone.
  CHECK(other.Maintain());
  CHECK(HasChannel(other, "w0"));
  std::vector<std::string> none;
  CHECK(other.Maintain(&none));
  CHECK_EQ(other.Stats().channels, 0u);
  CHECK_CLEAN(receiver);
}

// Issue 14: every delivery the layer does not make is counted where an operator can see it.
TEST(stats_count_skipped_refused_and_orphaned_deliveries) {
  TempName name;
  LayerOptions options = Options(name);
  options.capacity = 1;
  Layer layer(options);
  LayerOptions owner_options = Options(name);
  owner_options.client_id = "owner1";
  auto owner = std::make_unique<Layer>(owner_options);
  layer.GroupAdd("room", "a");
  layer.GroupAdd("room", "b");
  SendText(layer, "a", "fills a");
  CHECK_EQ(GroupSendText(layer, "room", "g"), 1u);  // b only: a is full
  CHECK_THROWS(SendText(layer, "a", "refused"), ErrorCode::kChannelFull);
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.deliveries_skipped_full, 1u);
  CHECK_EQ(s.sends_refused_full, 1u);
  CHECK_EQ(s.messages_orphaned, 0u);
  // A live instance's '!' channel queues; one of no attached instance drops and counts.
  CHECK(layer.Send("reply.owner1!abc", reinterpret_cast<const uint8_t*>("x"), 1));
  CHECK(!layer.Send("reply.nobody9!abc", reinterpret_cast<const uint8_t*>("x"), 1));
  CHECK(!HasChannel(layer, "reply.nobody9!abc"));
  CHECK_EQ(layer.Stats().messages_orphaned, 1u);
  // The owner goes away with a message queued: reclaiming its channel counts that message.
  owner->Close();
  owner.reset();
  CHECK_EQ(layer.Stats().messages_orphaned, 2u);
  CHECK(!HasChannel(layer, "reply.owner1!abc"));
  CHECK(!layer.Send("reply.owner1!abc", reinterpret_cast<const uint8_t*>("y"), 1));
  CHECK_EQ(layer.Stats().messages_orphaned, 3u);
  CHECK_CLEAN(layer);
}

TEST(release_channel_drops_messages_memberships_and_record) {
  TempName name;
  LayerOptions options = Options(name);
  options.client_id = "me1";
  Layer layer(options);
  layer.GroupAdd("room", "inbox.me1!x");
  layer.GroupAdd("lobby", "inbox.me1!x");
  SendText(layer, "inbox.me1!x", "one");
  CHECK_EQ(GroupSendText(layer, "room", "two"), 1u);
  CHECK_EQ(layer.ReleaseChannel("inbox.me1!x"), 2u);
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.channels, 0u);
  CHECK_EQ(s.members, 0u);
  CHECK_EQ(s.groups, 0u);
  CHECK_EQ(s.queued, 0u);
  CHECK_EQ(s.arena_used_bytes, 0u);
  CHECK_EQ(s.messages_orphaned, 2u);
  CHECK_EQ(layer.ReleaseChannel("inbox.me1!x"), 0u);  // twice is harmless
  CHECK_CLEAN(layer);
}

bool Readable(int fd, int timeout_ms) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

// The FIFO is written only while its receiver is armed (asleep on it): a receiver that polls the
// bell from shared memory costs its senders no syscall.
TEST(doorbell_fifo_is_written_only_while_armed) {
  TempName name;
  Layer receiver(Options(name));
  Layer sender(Options(name));
  int fd = receiver.doorbell_fd();
  CHECK(fd >= 0);
  CHECK(ReceiveText(receiver, "fifo", 1).empty());
  SendText(sender, "fifo", "one");
  CHECK(!Readable(fd, 0));  // not armed: the bell in shared memory is enough
  CHECK(!receiver.Arm());   // the ring came first: arming refuses, look now
  CHECK_EQ(ReceiveText(receiver, "fifo", 1), (std::vector<std::string>{"one"}));
  CHECK(receiver.TakeBell());
  CHECK(ReceiveText(receiver, "fifo", 1).empty());
  CHECK(receiver.Arm());
  SendText(sender, "fifo", "two");
  CHECK(Readable(fd, 1000));
  SendText(sender, "fifo", "three");  // coalesced: the bell is still set
  receiver.Disarm();
  CHECK(!Readable(fd, 0));  // drained
  CHECK(receiver.TakeBell());
  CHECK_EQ(ReceiveText(receiver, "fifo", 5), (std::vector<std::string>{"two", "three"}));
  struct stat st;
  CHECK(stat(shmch::Doorbells::FifoPath(name.str(), receiver.slot_index()).c_str(), &st) == 0);
  CHECK(S_ISFIFO(st.st_mode));
  CHECK_EQ(st.st_mode & 0077u, 0u);
}

// One receive call consumes the bell and the ready list when it names every waited-on channel.
TEST(receive_covering_all_waits_consumes_bell_and_ready_list) {
  TempName name;
  Layer receiver(Options(name));
  Layer sender(Options(name));
  shmch::ReceivedBatch batch;
  receiver.Receive({{"a", 1}, {"b", 1}}, batch, true);
  CHECK(batch.request_of.empty());
  SendText(sender, "b", "x");
  receiver.Receive({{"a", 1}, {"b", 1}}, batch, true);
  CHECK_EQ(batch.request_of.size(), size_t{1});
  CHECK(!receiver.TakeBell());
  std::vector<std::string> ready;
  CHECK(receiver.TakeReady(ready));
  CHECK(ready.empty());
}

// A message wakes one waiter of a shared channel, not all of them; a waiter that takes a message
// and leaves others wakes the next one.
TEST(a_message_wakes_one_waiter_and_the_taker_passes_the_rest_on) {
  TempName name;
  Layer a(Options(name)), b(Options(name)), c(Options(name));
  Layer sender(Options(name));
  CHECK(ReceiveText(a, "shared", 1).empty());
  CHECK(ReceiveText(b, "shared", 1).empty());
  CHECK(ReceiveText(c, "shared", 1).empty());
  SendText(sender, "shared", "m1");
  int rung = int{a.TakeBell()} + int{b.TakeBell()} + int{c.TakeBell()};
  CHECK_EQ(rung, 1);
  SendText(sender, "shared", "m2");
  SendText(sender, "shared", "m3");
  // Three messages rang three different waiters (round robin).
  CHECK_EQ(int{a.TakeBell()} + int{b.TakeBell()} + int{c.TakeBell()}, 2);
  // a takes one of three and leaves two: someone else is woken for them.
  CHECK_EQ(ReceiveText(a, "shared", 1).size(), size_t{1});
  CHECK(!a.TakeBell());
  CHECK_EQ(int{b.TakeBell()} + int{c.TakeBell()}, 1);
  CHECK_CLEAN(sender);
}

// The round robin crosses the 64-slot words of the waiter mask, both ways.
TEST(wake_ups_rotate_over_waiters_in_different_mask_words) {
  TempName name;
  std::vector<std::unique_ptr<Layer>> layers;
  for (int i = 0; i < 70; ++i) layers.push_back(std::make_unique<Layer>(Options(name)));
  Layer& low = *layers[3];
  Layer& high = *layers[68];
  Layer& sender = *layers[69];
  CHECK_EQ(low.slot_index(), 3u);
  CHECK_EQ(high.slot_index(), 68u);
  CHECK(ReceiveText(low, "rr", 1).empty());
  CHECK(ReceiveText(high, "rr", 1).empty());
  for (int round = 0; round < 3; ++round) {
    SendText(sender, "rr", "a");
    bool first_low = low.TakeBell();
    bool first_high = high.TakeBell();
    CHECK(first_low != first_high);  // exactly one woken
    SendText(sender, "rr", "b");
    CHECK_EQ(low.TakeBell(), !first_low);  // then the other one
    CHECK_EQ(high.TakeBell(), !first_high);
  }
  CHECK_CLEAN(sender);
}

// A waiter that was woken and then withdrew its wait (its receive was cancelled) passes the wake-up
// on, through unwait or through a receive that covers all its waits.
TEST(a_withdrawn_wait_passes_its_wake_up_on) {
  TempName name;
  Layer a(Options(name)), b(Options(name));
  Layer sender(Options(name));
  CHECK(ReceiveText(a, "p", 1).empty());
  CHECK(ReceiveText(b, "p", 1).empty());
  SendText(sender, "p", "m");
  Layer& woken = a.TakeBell() ? a : b;
  Layer& other = &woken == &a ? b : a;
  CHECK(!other.TakeBell());
  woken.Unwait({"p"});
  CHECK(other.TakeBell());
  // The same through a covering receive that no longer names "p".
  CHECK(ReceiveText(woken, "p", 0).empty());
  CHECK_EQ(ReceiveText(other, "p", 1), (std::vector<std::string>{"m"}));
  CHECK(ReceiveText(a, "p", 1).empty());
  CHECK(ReceiveText(b, "p", 1).empty());
  a.TakeBell();
  b.TakeBell();
  SendText(sender, "p", "n");
  Layer& woken2 = a.TakeBell() ? a : b;
  Layer& other2 = &woken2 == &a ? b : a;
  CHECK(!other2.TakeBell());
  shmch::ReceivedBatch batch;
  woken2.Receive({{"q", 1}}, batch, true);  // covers all of its waits: "p" is no longer one
  CHECK(batch.request_of.empty());
  CHECK(other2.TakeBell());
  CHECK_EQ(ReceiveText(other2, "p", 1), (std::vector<std::string>{"n"}));
}

// Finding #3: ringing must never throw (it runs in ~Critical). A sender at its descriptor limit
// cannot open the receiver's FIFO: the message is queued, the ring is counted as failed, and the
// process lives on. Before the fix: std::terminate (SIGABRT) from sem_open's EMFILE.
TEST(a_ring_that_cannot_be_delivered_is_counted_never_thrown) {
  TempName name;
  Layer receiver(Options(name));
  CHECK(ReceiveText(receiver, "emfile", 1).empty());
  CHECK(receiver.Arm());
  std::string how = RunChild([&] {
    Layer sender(Options(name));
    struct rlimit lim;
    getrlimit(RLIMIT_NOFILE, &lim);
    std::vector<int> held;
    for (;;) {  // use up every descriptor
      int fd = dup(0);
      if (fd < 0) break;
      held.push_back(fd);
    }
    SendText(sender, "emfile", "queued");
    if (sender.Stats().ring_failures != 1) _exit(3);
    for (int fd : held) close(fd);
    _exit(0);
  });
  CHECK_EQ(how, std::string("exit 0"));
  CHECK_EQ(ReceiveText(receiver, "emfile", 1), (std::vector<std::string>{"queued"}));
}

// The same when the sender had the FIFO open already (its write end cached from an earlier ring):
// the write fails with EPIPE, which must neither raise SIGPIPE nor stick.
TEST(ringing_a_cached_doorbell_whose_reader_died_is_harmless) {
  TempName name;
  Layer sender(Options(name));
  int ready[2], go[2];
  CHECK(pipe(ready) == 0 && pipe(go) == 0);
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    Layer receiver(Options(name));
    ReceiveText(receiver, "cached", 1);
    receiver.Arm();
    char c = 'a';
    if (write(ready[1], &c, 1) != 1) _exit(5);
    if (!Readable(receiver.doorbell_fd(), 5000)) _exit(6);  // the first ring arrived by FIFO
    receiver.Disarm();
    receiver.TakeBell();
    if (ReceiveText(receiver, "cached", 1).size() != 1) _exit(7);
    ReceiveText(receiver, "cached", 1);  // waits again
    receiver.Arm();
    if (write(ready[1], &c, 1) != 1) _exit(5);
    if (read(go[0], &c, 1) != 1) _exit(8);
    raise(SIGKILL);
  }
  char c;
  CHECK(read(ready[0], &c, 1) == 1);
  SendText(sender, "cached", "zero");  // caches the write end
  CHECK(read(ready[0], &c, 1) == 1);
  CHECK(write(go[1], &c, 1) == 1);
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  CHECK_EQ(sender.Stats().ring_failures, uint64_t{0});
  SendText(sender, "cached", "one");  // EPIPE, no signal
  CHECK_EQ(sender.Stats().ring_failures, uint64_t{1});
  Layer next(Options(name));  // takes the dead slot over, and the FIFO with it
  CHECK_EQ(next.slot_index(), uint32_t{1});
  CHECK(ReceiveText(next, "cached", 2).size() == 1);
  CHECK(ReceiveText(next, "cached", 1).empty());
  CHECK(next.Arm());
  SendText(sender, "cached", "two");  // opens the FIFO again and wakes the new owner
  CHECK(Readable(next.doorbell_fd(), 1000));
  for (int fd : {ready[0], ready[1], go[0], go[1]}) close(fd);
}

// A receiver killed while armed leaves a FIFO with no reader: ringing it is a counted failure,
// not a SIGPIPE (this test binary does not ignore SIGPIPE), and the next owner of the slot gets
// the message.
TEST(ringing_a_receiver_killed_while_armed_is_harmless) {
  TempName name;
  Layer sender(Options(name));
  std::string how = RunChildThatDies([&] {
    Layer receiver(Options(name));
    ReceiveText(receiver, "armed", 1);
    receiver.Arm();
    raise(SIGKILL);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  SendText(sender, "armed", "first");   // opens the dead FIFO: no reader
  SendText(sender, "armed", "second");  // bell already set: no syscall
  CHECK(sender.Stats().ring_failures >= 1);
  Layer next(Options(name));
  CHECK_EQ(ReceiveText(next, "armed", 5), (std::vector<std::string>{"first", "second"}));
  CHECK_CLEAN(next);
}

// ---------------------------------------------------------------------------------------------
// receiveAny.

namespace {

struct AnyText {
  std::vector<std::string> messages;  // "<channel>:<payload>"
  std::vector<uint32_t> still_ready;
};

AnyText ReceiveAnyText(Layer& layer, uint32_t set, const std::vector<std::string>& names,
                       const std::vector<uint32_t>& positions, uint32_t wanted) {
  shmch::AnyBatch batch;
  layer.ReceiveAny(set, positions, wanted, batch);
  AnyText out;
  size_t at = 0;
  for (size_t i = 0; i < batch.position_of.size(); ++i) {
    out.messages.push_back(names[batch.position_of[i]] + ":" +
                           std::string(reinterpret_cast<const char*>(batch.bytes.data()) + at, batch.length_of[i]));
    at += batch.length_of[i];
  }
  out.still_ready = batch.still_ready;
  std::sort(out.still_ready.begin(), out.still_ready.end());
  return out;
}

}  // namespace

TEST(receive_any_takes_the_oldest_head_first_and_keeps_channel_order) {
  TempName name;
  Layer layer(Options(name));
  Layer sender(Options(name));
  std::vector<std::string> names = {"x", "y", "z"};
  uint32_t set = layer.DefineSet(names);
  SendText(sender, "y", "1");
  SendText(layer, "x", "2");
  SendText(sender, "y", "3");
  SendText(layer, "z", "4");
  SendText(sender, "x", "5");
  AnyText got = ReceiveAnyText(layer, set, names, {0, 1, 2}, 3);
  CHECK_EQ(got.messages, (std::vector<std::string>{"y:1", "x:2", "y:3"}));
  CHECK_EQ(got.still_ready, (std::vector<uint32_t>{0, 2}));  // y is empty now: it holds our wait
  got = ReceiveAnyText(layer, set, names, {0, 2}, 5);
  CHECK_EQ(got.messages, (std::vector<std::string>{"z:4", "x:5"}));
  CHECK(got.still_ready.empty());
  CHECK(!layer.TakeBell());
  // Every channel of the set now holds our wait: a send to any of them rings us.
  SendText(sender, "z", "6");
  CHECK(layer.TakeBell());
  std::vector<std::string> ready;
  CHECK(layer.TakeReady(ready));
  CHECK_EQ(ready, (std::vector<std::string>{"z"}));
  // Only the channel that rang is asked about.
  got = ReceiveAnyText(layer, set, names, {2}, 1);
  CHECK_EQ(got.messages, (std::vector<std::string>{"z:6"}));
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.messages_received, 6u);
  CHECK_EQ(s.queued, 0u);
  CHECK_CLEAN(layer);
}

TEST(receive_any_steps_over_expired_messages_and_pops_them) {
  TempName name;
  LayerOptions quick = Options(name);
  quick.expiry_ms = 30;
  Layer stale(quick);
  Layer layer(Options(name));
  std::vector<std::string> names = {"a", "b"};
  uint32_t set = layer.DefineSet(names);
  SendText(stale, "a", "old");
  SendText(stale, "b", "old");
  usleep(60'000);
  SendText(layer, "b", "fresh");
  AnyText got = ReceiveAnyText(layer, set, names, {0, 1}, 2);
  CHECK_EQ(got.messages, (std::vector<std::string>{"b:fresh"}));
  CHECK(got.still_ready.empty());
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.messages_expired, 2u);
  CHECK_EQ(s.queued, 0u);
  CHECK_CLEAN(layer);
}

TEST(receive_any_leaves_a_message_it_did_not_take_to_another_waiter) {
  TempName name;
  Layer a(Options(name)), b(Options(name));
  Layer sender(Options(name));
  std::vector<std::string> names = {"shared", "other"};
  uint32_t set = a.DefineSet(names);
  CHECK(ReceiveAnyText(a, set, names, {0, 1}, 1).messages.empty());
  CHECK(ReceiveText(b, "shared", 1).empty());
  SendText(sender, "other", "o1");
  SendText(sender, "shared", "s1");
  SendText(sender, "shared", "s2");
  (void)a.TakeBell();
  (void)b.TakeBell();
  AnyText got = ReceiveAnyText(a, set, names, {0, 1}, 1);
  CHECK_EQ(got.messages, (std::vector<std::string>{"other:o1"}));
  CHECK_EQ(got.still_ready, (std::vector<uint32_t>{0}));
  // "shared" still holds messages and a no longer waits there: b is woken for them.
  CHECK(b.TakeBell());
  CHECK_EQ(ReceiveText(b, "shared", 5), (std::vector<std::string>{"s1", "s2"}));
  CHECK_CLEAN(sender);
}

// The core keeps the heads of channels holding messages between calls; a head another receiver
// took meanwhile is noticed before anything is taken, and the order still holds.
TEST(receive_any_keeps_busy_heads_and_notices_heads_taken_by_others) {
  TempName name;
  Layer a(Options(name)), b(Options(name));
  std::vector<std::string> names = {"x", "y"};
  uint32_t set = a.DefineSet(names);
  SendText(b, "x", "x1");
  SendText(b, "x", "x2");
  SendText(b, "y", "y1");
  shmch::AnyBatch batch;
  a.ReceiveAny(set, {0, 1}, 1, batch);
  CHECK_EQ(batch.held, 2u);  // x (x2) and y (y1): no ring needed to come back to them
  CHECK_EQ(ReceiveText(b, "x", 1), (std::vector<std::string>{"x2"}));
  SendText(b, "x", "x3");
  CHECK(!a.TakeBell());  // a holds no wait on x or y now
  AnyText got = ReceiveAnyText(a, set, names, {}, 5);
  CHECK_EQ(got.messages, (std::vector<std::string>{"y:y1", "x:x3"}));
  CHECK_EQ(a.Stats().queued, 0u);
  // Both are empty now and hold our wait again.
  SendText(b, "y", "y2");
  CHECK(a.TakeBell());
  CHECK_CLEAN(a);
}

// One lock per wake-up: the set's call consumes the bell and the ready list, takes from the set's
// channels that rang without being told, and reports the others.
TEST(receive_any_answering_the_bell_consumes_it_and_reports_other_ready_channels) {
  TempName name;
  Layer a(Options(name)), sender(Options(name));
  std::vector<std::string> names = {"p", "q"};
  uint32_t set = a.DefineSet(names);
  shmch::AnyBatch batch;
  a.ReceiveAny(set, {0, 1}, 1, batch);  // both empty: both hold our wait
  CHECK(ReceiveText(a, "single", 1).empty());  // a receive() elsewhere waits too
  SendText(sender, "q", "q1");
  SendText(sender, "single", "s1");
  shmch::AnyBatch answered;
  a.ReceiveAny(set, {}, 1, answered, true);
  CHECK_EQ(answered.position_of, (std::vector<uint32_t>{1}));
  CHECK_EQ(answered.other_ready, (std::vector<std::string>{"single"}));
  CHECK(!answered.ready_overflow);
  CHECK(!a.TakeBell());
  std::vector<std::string> ready;
  CHECK(a.TakeReady(ready));
  CHECK(ready.empty());
  CHECK_EQ(ReceiveText(a, "single", 1), (std::vector<std::string>{"s1"}));
  CHECK_CLEAN(a);
}

TEST(receive_any_invalid_sets_and_positions) {
  TempName name;
  Layer layer(Options(name));
  CHECK_THROWS(layer.DefineSet({}), shmch::ErrorCode::kInvalidArgument);
  CHECK_THROWS(layer.DefineSet({"a", "a"}), shmch::ErrorCode::kInvalidArgument);
  CHECK_THROWS(layer.DefineSet({"a", "bad name"}), shmch::ErrorCode::kInvalidArgument);
  uint32_t set = layer.DefineSet({"a", "b"});
  shmch::AnyBatch batch;
  CHECK_THROWS(layer.ReceiveAny(set, {2}, 1, batch), shmch::ErrorCode::kInvalidArgument);
  CHECK_THROWS(layer.ReceiveAny(set + 1, {0}, 1, batch), shmch::ErrorCode::kInvalidArgument);
  layer.ReceiveAny(set, {1, 1, 0}, 0, batch);  // wanting nothing touches nothing
  CHECK(!HasChannel(layer, "a"));
  layer.ForgetSet(set);
  CHECK_THROWS(layer.ReceiveAny(set, {0}, 1, batch), shmch::ErrorCode::kInvalidArgument);
  CHECK_CLEAN(layer);
}

TEST(recovery_receive_any_receiver_dies_before_popping) {
  TempName name;
  Layer layer(Options(name));
  for (int i = 0; i < 6; ++i) SendText(layer, i % 2 ? "p" : "q", "m" + std::to_string(i));
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    std::vector<std::string> names = {"p", "q", "r"};
    uint32_t set = child.DefineSet(names);
    shmch::g_fault_point = 21;
    ReceiveAnyText(child, set, names, {0, 1, 2}, 4);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  std::vector<std::string> names = {"p", "q", "r"};
  uint32_t set = layer.DefineSet(names);
  AnyText got = ReceiveAnyText(layer, set, names, {0, 1, 2}, 10);  // nothing was lost, in order
  CHECK_EQ(got.messages, (std::vector<std::string>{"q:m0", "p:m1", "q:m2", "p:m3", "q:m4", "p:m5"}));
  CHECK_CLEAN(layer);
}

// Recovery keeps the enqueue counter above every queued message, so a scribbled counter cannot
// make new messages look older than the ones already queued.
TEST(recovery_keeps_the_enqueue_counter_above_queued_messages) {
  TempName name;
  Layer layer(Options(name));
  std::vector<std::string> names = {"old", "new"};
  uint32_t set = layer.DefineSet(names);
  for (int i = 0; i < 3; ++i) SendText(layer, "old", "o" + std::to_string(i));
  uint64_t zero = 0;
  PokeSegment(name, offsetof(shmch::Header, next_seq), &zero, sizeof zero);
  // A dead lock holder makes the next operation rebuild derived state.
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    shmch::g_fault_point = 1;
    SendText(child, "elsewhere", "x");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  SendText(layer, "new", "n0");
  AnyText got = ReceiveAnyText(layer, set, names, {0, 1}, 4);
  CHECK_EQ(got.messages, (std::vector<std::string>{"old:o0", "old:o1", "old:o2", "new:n0"}));
  CHECK_CLEAN(layer);
}

// ---------------------------------------------------------------------------------------------
// The arena.

TEST(checksum_is_crc32c_and_copying_computes_the_same) {
  const char* check = "123456789";  // the standard CRC-32C check value
  CHECK_EQ(shmch::Crc32c(reinterpret_cast<const uint8_t*>(check), 9), 0xe3069283u);
  std::vector<uint8_t> source(100003), copy(source.size());
  for (size_t i = 0; i < source.size(); ++i) source[i] = static_cast<uint8_t>(i * 131 + 7);
  for (size_t length : {size_t{0}, size_t{1}, size_t{31}, size_t{32}, size_t{33}, source.size()}) {
    std::fill(copy.begin(), copy.end(), 0);
    uint32_t crc = shmch::CopyWithCrc32c(copy.data(), source.data(), length);
    CHECK_EQ(crc, shmch::Crc32c(source.data(), length));
    CHECK(std::equal(source.begin(), source.begin() + length, copy.begin()));
  }
}

TEST(arena_pages_for) {
  using shmch::Arena;
  constexpr uint32_t header = sizeof(shmch::BlockHeader);
  CHECK_EQ(Arena::PagesFor(0), 1u);
  CHECK_EQ(Arena::PagesFor(shmch::kPageSize - header), 1u);
  CHECK_EQ(Arena::PagesFor(shmch::kPageSize - header + 1), 2u);
  CHECK_EQ(Arena::PagesFor(2 * shmch::kPageSize - header), 2u);
  CHECK_EQ(Arena::PagesFor(2 * shmch::kPageSize - header + 1), 3u);
}

TEST(arena_allocate_free_many_sizes_without_overlap) {
  TempName name;
  shmch::SegmentConfig config = Options(name).segment;
  shmch::Segment segment(config);
  shmch::Arena arena(segment);
  shmch::Header& h = segment.header();
  const uint32_t page_count = h.page_count;
  CHECK(page_count >= 64);

  struct Block {
    uint32_t first, pages, length, id;
  };
  std::vector<Block> live;
  uint32_t sizes[] = {0, 1, 48, 49, 100, 1000, 5000, 64, 333, 20000, 7, 4000};
  uint32_t id = 0;
  auto check_blocks = [&] {
    std::vector<Block> sorted = live;
    std::sort(sorted.begin(), sorted.end(), [](const Block& a, const Block& b) { return a.first < b.first; });
    uint64_t pages = 0;
    for (size_t i = 0; i < sorted.size(); ++i) {
      CHECK(sorted[i].first + sorted[i].pages <= page_count);
      if (i + 1 < sorted.size()) CHECK(sorted[i].first + sorted[i].pages <= sorted[i + 1].first);
      for (uint32_t p = sorted[i].first; p < sorted[i].first + sorted[i].pages; ++p) CHECK(arena.IsMarked(p));
      auto expected = Payload(sorted[i].id, sorted[i].length);
      CHECK(std::equal(expected.begin(), expected.end(), arena.Payload(sorted[i].first)));
      CHECK_EQ(segment.block(sorted[i].first).length, sorted[i].length);
      pages += sorted[i].pages;
    }
    CHECK_EQ(uint64_t{h.used_pages}, pages);
  };
  auto allocate_until_full = [&] {
    for (uint32_t n = 0;; ++n) {
      uint32_t length = sizes[n % std::size(sizes)];
      uint32_t first = arena.Allocate(length);
      if (first == shmch::kNil) {
        // Full means: no free run of that many pages is left.
        CHECK(n > 0);
        break;
      }
      CHECK_EQ(segment.block(first).pages, shmch::Arena::PagesFor(length));
      auto bytes = Payload(id, length);
      if (length) std::memcpy(arena.Payload(first), bytes.data(), length);
      live.push_back({first, shmch::Arena::PagesFor(length), length, id++});
    }
  };

  allocate_until_full();
  check_blocks();
  CHECK(h.used_pages > page_count / 2);
  // Free every other block, then fill the holes again with other sizes.
  std::vector<Block> kept;
  for (size_t i = 0; i < live.size(); ++i) {
    if (i % 2) {
      arena.Free(live[i].first);
    } else {
      kept.push_back(live[i]);
    }
  }
  live = kept;
  check_blocks();
  std::rotate(std::begin(sizes), std::begin(sizes) + 5, std::end(sizes));
  allocate_until_full();
  check_blocks();
  for (const Block& b : live) arena.Free(b.first);
  live.clear();
  CHECK_EQ(h.used_pages, 0u);
  for (uint32_t p = 0; p < page_count; ++p) CHECK(!arena.IsMarked(p));
  // One block as large as the whole arena fits once it is empty.
  uint32_t whole = arena.Allocate(page_count * shmch::kPageSize - sizeof(shmch::BlockHeader));
  CHECK_EQ(whole, 0u);
  CHECK_EQ(arena.Allocate(0), shmch::kNil);
  arena.Free(whole);
  CHECK_EQ(h.used_pages, 0u);
}

TEST(arena_full_gives_arena_full) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 100000;
  Layer layer(o);
  const uint32_t size = 60000;
  uint32_t sent = 0;
  bool full = false;
  for (uint32_t i = 0; i < 1000 && !full; ++i) {
    auto p = Payload(i, size);
    try {
      layer.Send("bulk", p.data(), size);
      ++sent;
    } catch (const Error& e) {
      CHECK_EQ(std::string(CodeName(e.code())), std::string(CodeName(ErrorCode::kArenaFull)));
      full = true;
    }
  }
  CHECK(full);
  CHECK(sent > 10);
  CHECK_CLEAN(layer);
  // A small message still fits where a large one does not.
  SendText(layer, "small", "still room for this");
  shmch::ReceivedBatch batch;
  layer.Receive({{"bulk", sent}}, batch);
  CHECK_EQ(batch.length_of.size(), size_t{sent});
  for (uint32_t i = 0; i < sent; ++i) {
    auto expected = Payload(i, size);
    CHECK(std::equal(expected.begin(), expected.end(), batch.bytes.begin() + size_t{i} * size));
  }
  CHECK_EQ(ReceiveText(layer, "small", 1), (std::vector<std::string>{"still room for this"}));
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  auto p = Payload(0, size);
  layer.Send("bulk", p.data(), size);
  CHECK_CLEAN(layer);
}

TEST(node_pool_exhaustion_gives_arena_full) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 100000;
  Layer layer(o);
  uint32_t sent = 0;
  try {
    for (;; ++sent) SendText(layer, "many." + std::to_string(sent % 7), "n");
  } catch (const Error& e) {
    CHECK_EQ(std::string(CodeName(e.code())), std::string(CodeName(ErrorCode::kArenaFull)));
  }
  CHECK_EQ(sent, o.segment.max_nodes);
  CHECK_EQ(layer.Stats().nodes_free, 0u);
  CHECK_EQ(layer.Stats().queued, o.segment.max_nodes);
  uint32_t received = 0;
  for (int c = 0; c < 7; ++c) received += ReceiveText(layer, "many." + std::to_string(c), 10000).size();
  CHECK_EQ(received, sent);
  CHECK_EQ(layer.Stats().nodes_free, o.segment.max_nodes);
  CHECK_CLEAN(layer);
  SendText(layer, "many.0", "works again");
  CHECK_EQ(ReceiveText(layer, "many.0", 5), std::vector<std::string>{"works again"});
}

// Fills the node pool with 1-page messages; returns how many were sent.
static uint32_t FillNodePool(Layer& layer, uint32_t max_nodes) {
  for (uint32_t i = 0; i < max_nodes; ++i) SendText(layer, "fill", "n");
  return max_nodes;
}

// Regression (layer.cc, Layer::Send): StoreBlock() succeeded, then Enqueue() threw kArenaFull
// because the node pool was empty; the catch did not free the stored block, so its pages stayed
// marked with no node referencing them (a producer retrying on SegmentFull leaked the arena).
TEST(send_refused_for_lack_of_nodes_frees_its_block) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 100000;
  Layer layer(o);
  FillNodePool(layer, o.segment.max_nodes);
  uint64_t used = layer.Stats().arena_used_bytes;
  CHECK_THROWS(SendText(layer, "one-more", std::string(1000, 'x')), ErrorCode::kArenaFull);
  CHECK_EQ(layer.Stats().arena_used_bytes, used);
  CHECK_CLEAN(layer);
}

// Regression (layer.cc, Layer::GroupSend): the same leak when the first Enqueue() of a group send
// threw for lack of nodes: the exception skipped `if (block != kNil && delivered == 0) Free(block)`.
TEST(group_send_refused_for_lack_of_nodes_frees_its_block) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 100000;
  Layer layer(o);
  layer.GroupAdd("g", "member");
  FillNodePool(layer, o.segment.max_nodes);
  uint64_t used = layer.Stats().arena_used_bytes;
  CHECK_THROWS(GroupSendText(layer, "g", std::string(1000, 'x')), ErrorCode::kArenaFull);
  CHECK_EQ(layer.Stats().arena_used_bytes, used);
  CHECK_CLEAN(layer);
}

// ---------------------------------------------------------------------------------------------
// Memory on demand: what the segment occupies in /dev/shm follows what it holds.

namespace {

uint64_t ShmBytesOf(const TempName& name) {
  struct stat st;
  if (stat(name.path().c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

// A layer whose arena has many chunks, with small tables.
LayerOptions RoomyOptions(const TempName& name) {
  LayerOptions o = Options(name);
  o.segment.size = 24u << 20;
  o.segment.max_message_size = 4u << 20;
  o.capacity = 1000;
  return o;
}

}  // namespace

TEST(memory_on_demand_open_reserves_only_the_fixed_part) {
  TempName name;
  Layer layer(RoomyOptions(name));
  uint64_t at_open = ShmBytesOf(name);
  CHECK(at_open > 0);
  CHECK(at_open < (1u << 20));  // header, slots, buckets, bitmap: not the 24 MiB
  CHECK_EQ(layer.Stats().shm_bytes, at_open);
  SendText(layer, "a", "first");  // a channel step, a node step and one arena chunk
  uint64_t after = ShmBytesOf(name);
  CHECK(after > at_open);
  CHECK(after < at_open + (2u << 20));
  CHECK_CLEAN(layer);
}

TEST(memory_on_demand_arena_grows_with_messages_and_is_given_back) {
  TempName name;
  Layer layer(RoomyOptions(name));
  SendText(layer, "warm", "x");
  ReceiveText(layer, "warm", 1);
  uint64_t base = ShmBytesOf(name);
  const uint32_t size = 1u << 20;
  for (uint32_t i = 0; i < 12; ++i) {
    auto p = Payload(i, size);
    layer.Send("big", p.data(), size);
  }
  CHECK(ShmBytesOf(name) >= base + 12ull * size);
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveText(layer, "big", 100).size(), 12u);
  // The warm reserve keeps what the busy period's peak used (12 messages) and 2 MiB, no more.
  uint64_t busy = ShmBytesOf(name);
  CHECK(busy <= base + 12ull * size + (3u << 20));
  CHECK_CLEAN(layer);
  // A second round of the same reuses it: nothing new is reserved.
  for (uint32_t i = 0; i < 12; ++i) {
    auto p = Payload(i, size);
    layer.Send("big", p.data(), size);
  }
  CHECK(ShmBytesOf(name) <= busy);
  CHECK_EQ(ReceiveText(layer, "big", 100).size(), 12u);
  CHECK_CLEAN(layer);
  // The rest goes when the layer is idle (a housekeeping round with no send since the last).
  layer.Maintain();
  layer.Maintain();
  CHECK(ShmBytesOf(name) <= base);
  CHECK_CLEAN(layer);
  auto p = Payload(99, size);
  layer.Send("big", p.data(), size);  // and is reserved again when needed
  CHECK_EQ(ReceiveText(layer, "big", 1).size(), 1u);
  CHECK_CLEAN(layer);
}

TEST(memory_on_demand_last_process_out_gives_back_empty_memory) {
  TempName name;
  uint64_t base;
  {
    Layer layer(RoomyOptions(name));
    SendText(layer, "keep", "stays queued");
    base = ShmBytesOf(name);
    const uint32_t size = 3u << 20;
    auto p = Payload(1, size);
    layer.Send("big", p.data(), size);
    CHECK_EQ(ReceiveText(layer, "big", 1).size(), 1u);
    CHECK(ShmBytesOf(name) > base + (2u << 20));  // within the keep-empty budget
  }
  CHECK(ShmBytesOf(name) <= base);
  Layer again(RoomyOptions(name));
  CHECK_EQ(ReceiveText(again, "keep", 1), std::vector<std::string>{"stays queued"});
  CHECK_CLEAN(again);
}

TEST(memory_on_demand_tables_grow_in_steps_up_to_their_limits) {
  TempName name;
  LayerOptions o = RoomyOptions(name);
  o.segment.max_channels = 3000;  // several steps of 256 KiB
  o.segment.max_members = 20000;
  o.segment.max_nodes = 4096;
  Layer layer(o);
  Layer peer(o);  // sees the others' growth at its next lock
  for (int i = 0; i < 3000; ++i) SendText(i % 2 ? layer : peer, "c." + std::to_string(i), "m");
  CHECK_THROWS(SendText(layer, "c.one-too-many", "m"), ErrorCode::kTableFull);
  for (int i = 0; i < 20; ++i) layer.GroupAdd("g", "c." + std::to_string(i));
  CHECK_CLEAN(layer);
  CHECK_CLEAN(peer);
  CHECK_EQ(peer.Stats().channels, 3000u);
  for (int i = 0; i < 3000; ++i) CHECK_EQ(ReceiveText(peer, "c." + std::to_string(i), 2).size(), 1u);
  CHECK_CLEAN(layer);
}

// releaseChannel walks the channel's queue freeing nodes and blocks: an owner killed halfway
// leaves a queue cut short and unreferenced nodes and blocks, which recovery gives back.
TEST(recovery_owner_dies_releasing_a_channel) {
  TempName name;
  Layer layer(Options(name));
  layer.GroupAdd("room", "plain");
  std::string how = RunChildThatDies([&] {
    LayerOptions options = Options(name);
    options.client_id = "dying1";
    Layer child(options);
    child.GroupAdd("room", "inbox.dying1!x");
    for (int i = 0; i < 5; ++i) SendText(child, "inbox.dying1!x", "m" + std::to_string(i));
    shmch::g_fault_point = 16;
    child.ReleaseChannel("inbox.dying1!x");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  CHECK(layer.Maintain());  // reclaims the dead owner's slot and what is left of its channel
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.channels, 1u);  // "plain"
  CHECK_EQ(s.members, 1u);
  CHECK_EQ(s.queued, 0u);
  CHECK_EQ(s.arena_used_bytes, 0u);
  CHECK_EQ(GroupSendText(layer, "room", "after"), 1u);
  CHECK_EQ(ReceiveText(layer, "plain", 5), std::vector<std::string>{"after"});
  CHECK_CLEAN(layer);
}

TEST(recovery_holder_dies_between_reserving_and_publishing_a_table_step) {
  TempName name;
  Layer layer(RoomyOptions(name));
  std::string how = RunChildThatDies([&] {
    Layer child(RoomyOptions(name));
    shmch::g_fault_point = 11;
    SendText(child, "first", "lost");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  SendText(layer, "first", "after");
  CHECK_EQ(ReceiveText(layer, "first", 5), std::vector<std::string>{"after"});
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  CHECK_CLEAN(layer);
}

TEST(recovery_holder_dies_between_reserving_and_marking_arena_chunks) {
  TempName name;
  Layer layer(RoomyOptions(name));
  SendText(layer, "small", "kept");
  uint64_t before = ShmBytesOf(name);
  const uint32_t size = 3u << 20;
  std::string how = RunChildThatDies([&] {
    Layer child(RoomyOptions(name));
    shmch::g_fault_point = 12;
    auto p = Payload(3, size);
    child.Send("big", p.data(), size);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK(ShmBytesOf(name) >= before + size);  // the dead holder's reservation
  CHECK_CLEAN(layer);  // recovery punches reservations no chunk is marked for
  CHECK(ShmBytesOf(name) <= before);
  CHECK_EQ(ReceiveText(layer, "small", 5), std::vector<std::string>{"kept"});
  auto p = Payload(4, size);
  layer.Send("big", p.data(), size);
  CHECK_EQ(ReceiveText(layer, "big", 5).size(), 1u);
  CHECK_CLEAN(layer);
}

TEST(recovery_holder_dies_between_unmarking_and_punching_a_chunk) {
  TempName name;
  Layer layer(RoomyOptions(name));
  SendText(layer, "small", "kept");
  uint64_t base = ShmBytesOf(name);
  const uint32_t size = 1u << 20;
  for (uint32_t i = 0; i < 12; ++i) {
    auto p = Payload(i, size);
    layer.Send("big", p.data(), size);
  }
  std::string how = RunChildThatDies([&] {
    Layer child(RoomyOptions(name));
    ReceiveText(child, "big", 6);
    // Freed chunks stay in the warm reserve until the layer is idle: the second housekeeping
    // round without a send gives them back, and dies there.
    shmch::g_fault_point = 13;
    child.Maintain();
    child.Maintain();
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  // What it received is gone with it, the rest is intact.
  CHECK_EQ(ReceiveText(layer, "big", 100).size(), 6u);
  CHECK_EQ(ReceiveText(layer, "small", 5), std::vector<std::string>{"kept"});
  layer.Maintain();
  layer.Maintain();
  CHECK(ShmBytesOf(name) <= base + (1u << 20));
  CHECK_CLEAN(layer);
}

// ---------------------------------------------------------------------------------------------
// Groups.

TEST(groups_add_send_discard) {
  TempName name;
  Layer layer(Options(name));
  layer.GroupAdd("room", "c1");
  layer.GroupAdd("room", "c2");
  layer.GroupAdd("room", "c3");
  layer.GroupAdd("room", "c1");  // idempotent
  CHECK_CLEAN(layer);
  auto groups = layer.ListGroups(100);
  CHECK_EQ(groups.size(), 1u);
  CHECK_EQ(groups[0].name, std::string("room"));
  CHECK_EQ(groups[0].members, 3u);
  CHECK_EQ(layer.Stats().members, 3u);

  const std::string text(1000, 'g');
  CHECK_EQ(GroupSendText(layer, "room", text), 3u);
  // One stored copy, three queued references.
  CHECK_EQ(layer.Stats().arena_used_bytes, uint64_t{shmch::Arena::PagesFor(1000)} * shmch::kPageSize);
  CHECK_EQ(layer.Stats().queued, 3u);
  CHECK_CLEAN(layer);
  for (const char* c : {"c1", "c2", "c3"}) CHECK_EQ(ReceiveText(layer, c, 5), std::vector<std::string>{text});
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);

  layer.GroupDiscard("room", "c2");
  layer.GroupDiscard("room", "c2");     // discarding again is harmless
  layer.GroupDiscard("room", "nope");   // so is discarding a stranger
  layer.GroupDiscard("nogroup", "c1");  // or from a group that does not exist
  CHECK_CLEAN(layer);
  CHECK_EQ(GroupSendText(layer, "room", "second"), 2u);
  CHECK(ReceiveText(layer, "c2", 5).empty());
  CHECK_EQ(ReceiveText(layer, "c1", 5), std::vector<std::string>{"second"});
  CHECK_EQ(ReceiveText(layer, "c3", 5), std::vector<std::string>{"second"});

  layer.GroupDiscard("room", "c1");
  layer.GroupDiscard("room", "c3");
  CHECK(layer.ListGroups(100).empty());
  CHECK_EQ(layer.Stats().groups, 0u);
  CHECK_EQ(layer.Stats().members, 0u);
  CHECK_EQ(GroupSendText(layer, "room", "nobody"), 0u);
  CHECK_EQ(GroupSendText(layer, "never-existed", "nobody"), 0u);
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(groups_one_channel_in_many_groups) {
  TempName name;
  Layer layer(Options(name));
  for (int g = 0; g < 10; ++g) layer.GroupAdd("g" + std::to_string(g), "shared");
  layer.GroupAdd("g0", "other");
  auto channels = layer.ListChannels(100);
  CHECK_EQ(channels.size(), 2u);
  for (const auto& c : channels) CHECK_EQ(c.memberships, c.name == "shared" ? 10u : 1u);
  for (int g = 0; g < 10; ++g) CHECK_EQ(GroupSendText(layer, "g" + std::to_string(g), "to g" + std::to_string(g)), 1u + (g == 0));
  CHECK_EQ(ReceiveText(layer, "shared", 100), Texts("to g", 0, 10));
  CHECK_CLEAN(layer);
  for (int g = 0; g < 10; ++g) layer.GroupDiscard("g" + std::to_string(g), "shared");
  CHECK_EQ(layer.ListGroups(100).size(), 1u);
  CHECK_CLEAN(layer);
}

TEST(groups_send_skips_full_members) {
  TempName name;
  LayerOptions o = Options(name);
  o.channel_capacity = {{"tiny.*", 1}};
  Layer layer(o);
  layer.GroupAdd("g", "tiny.a");
  layer.GroupAdd("g", "roomy");
  SendText(layer, "tiny.a", "already full");
  CHECK_EQ(GroupSendText(layer, "g", "fan"), 1u);
  CHECK_EQ(ReceiveText(layer, "tiny.a", 5), std::vector<std::string>{"already full"});
  CHECK_EQ(ReceiveText(layer, "roomy", 5), std::vector<std::string>{"fan"});
  CHECK_CLEAN(layer);
  // With every member full, nothing is stored.
  SendText(layer, "tiny.a", "full again");
  layer.GroupDiscard("g", "roomy");
  CHECK_EQ(GroupSendText(layer, "g", "lost"), 0u);
  CHECK_EQ(layer.Stats().queued, 1u);
  CHECK_CLEAN(layer);
}

TEST(groups_memberships_expire) {
  TempName name;
  LayerOptions o = Options(name);
  o.group_expiry_ms = 1;
  Layer layer(o);
  layer.GroupAdd("brief", "member");
  usleep(20'000);
  CHECK_EQ(GroupSendText(layer, "brief", "too late"), 0u);
  CHECK(layer.ListGroups(100).empty());
  CHECK_EQ(layer.Stats().members, 0u);
  CHECK(ReceiveText(layer, "member", 1).empty());
  CHECK_CLEAN(layer);
}

TEST(groups_members_lists_live_memberships) {
  TempName name;
  Layer layer(Options(name));
  Layer other(Options(name));
  CHECK(layer.GroupMembers("nobody").empty());
  layer.GroupAdd("room", "c1");
  other.GroupAdd("room", "c2");
  layer.GroupAdd("room", "c1");
  layer.GroupAdd("elsewhere", "c3");
  auto members = other.GroupMembers("room");
  std::sort(members.begin(), members.end());
  CHECK_EQ(members, (std::vector<std::string>{"c1", "c2"}));
  CHECK_EQ(layer.GroupMembers("elsewhere"), std::vector<std::string>{"c3"});
  CHECK_THROWS(layer.GroupMembers("bad name"), ErrorCode::kInvalidArgument);
  CHECK_THROWS(layer.GroupMembers(""), ErrorCode::kInvalidArgument);
  // A membership renewed by an instance with a 1 ms group expiry is expired at once: not listed,
  // and listing leaves the tables as they were.
  LayerOptions brief = Options(name);
  brief.group_expiry_ms = 1;
  Layer hasty(brief);
  hasty.GroupAdd("room", "c1");
  usleep(20'000);
  CHECK_EQ(layer.GroupMembers("room"), std::vector<std::string>{"c2"});
  CHECK_EQ(layer.Stats().members, 3u);
  CHECK_CLEAN(layer);
  layer.GroupDiscard("room", "c2");
  CHECK(other.GroupMembers("room").empty());
  CHECK_CLEAN(layer);
}

TEST(groups_table_full) {
  TempName name;
  Layer layer(Options(name));
  for (uint32_t g = 0; g < 32; ++g) layer.GroupAdd("g" + std::to_string(g), "c");
  CHECK_THROWS(layer.GroupAdd("one-too-many", "c"), ErrorCode::kTableFull);
  CHECK_EQ(layer.Stats().groups, 32u);
  CHECK_CLEAN(layer);
}

// ---------------------------------------------------------------------------------------------
// Flush.

TEST(flush_empties_everything) {
  TempName name;
  Layer layer(Options(name));
  Layer other(Options(name));
  for (int i = 0; i < 20; ++i) SendText(layer, "f" + std::to_string(i % 4), std::string(100 * i, 'f'));
  layer.GroupAdd("g1", "f0");
  layer.GroupAdd("g1", "f1");
  layer.GroupAdd("g2", "f1");
  CHECK_EQ(GroupSendText(layer, "g1", "fan"), 2u);
  CHECK(ReceiveText(other, "waiting", 1).empty());  // a waiter registration
  CHECK_CLEAN(layer);
  layer.Flush();
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.channels, 0u);
  CHECK_EQ(s.groups, 0u);
  CHECK_EQ(s.members, 0u);
  CHECK_EQ(s.queued, 0u);
  CHECK_EQ(s.arena_used_bytes, 0u);
  CHECK_EQ(s.nodes_free, 2048u);
  CHECK(layer.ListChannels(100).empty());
  CHECK(layer.ListGroups(100).empty());
  CHECK_CLEAN(layer);
  CHECK_CLEAN(other);
  // Still fully usable afterwards, from both instances.
  SendText(other, "after", "flush");
  layer.GroupAdd("g1", "after");
  CHECK_EQ(GroupSendText(other, "g1", "again"), 1u);
  CHECK_EQ(ReceiveText(layer, "after", 5), (std::vector<std::string>{"flush", "again"}));
  CHECK_CLEAN(layer);
}

// ---------------------------------------------------------------------------------------------
// Recovery: a process dies inside a critical section, holding the segment lock.

TEST(recovery_sender_dies_before_linking_node) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "r", "before");
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    shmch::g_fault_point = 1;
    SendText(child, "r", "lost");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);  // takes the lock over from the dead child and rebuilds the derived state
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.lock_recoveries, 1u);
  CHECK_EQ(s.slots_attached, 1u);
  CHECK_EQ(s.queued, 1u);
  CHECK_EQ(ReceiveText(layer, "r", 10), std::vector<std::string>{"before"});
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);  // the dead sender's block was reclaimed
  SendText(layer, "r", "after");
  CHECK_EQ(ReceiveText(layer, "r", 10), std::vector<std::string>{"after"});
  CHECK_CLEAN(layer);
}

TEST(recovery_sender_dies_after_linking_node) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "r", "before");
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    shmch::g_fault_point = 2;
    SendText(child, "r", "linked");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  SendText(layer, "r", "after");  // this send recovers first
  CHECK_CLEAN(layer);
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  CHECK_EQ(ReceiveText(layer, "r", 10), (std::vector<std::string>{"before", "linked", "after"}));
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(recovery_receiver_dies_before_popping) {
  TempName name;
  Layer layer(Options(name));
  for (int i = 0; i < 5; ++i) SendText(layer, "r", "m" + std::to_string(i));
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    shmch::g_fault_point = 3;
    ReceiveText(child, "r", 3);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  CHECK_EQ(ReceiveText(layer, "r", 10), Texts("m", 0, 5));  // nothing was lost
  CHECK_CLEAN(layer);
}

TEST(recovery_group_sender_dies_midway) {
  TempName name;
  Layer layer(Options(name));
  for (const char* c : {"g.a", "g.b", "g.c"}) layer.GroupAdd("g", c);
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    shmch::g_fault_point = 2;  // after linking the first member's node: one block, refcount 1
    GroupSendText(child, "g", "partial");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.queued, 1u);
  CHECK_EQ(s.members, 3u);
  uint32_t got = 0;
  for (const char* c : {"g.a", "g.b", "g.c"}) got += ReceiveText(layer, c, 5).size();
  CHECK_EQ(got, 1u);
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_EQ(GroupSendText(layer, "g", "whole"), 3u);
  CHECK_CLEAN(layer);
}

TEST(recovery_by_a_newcomer_in_the_dead_holders_slot) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "r", "kept");
  uint32_t dead_slot = shmch::kNil;
  int pipe_fds[2];
  CHECK(pipe(pipe_fds) == 0);
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    uint32_t slot = child.slot_index();
    if (write(pipe_fds[1], &slot, sizeof slot) != sizeof slot) _exit(5);
    shmch::g_fault_point = 3;
    ReceiveText(child, "r", 1);
  });
  if (read(pipe_fds[0], &dead_slot, sizeof dead_slot) != sizeof dead_slot) dead_slot = shmch::kNil;
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  CHECK_EQ(how, std::string("SIGKILL"));
  // Nobody touched the segment since: the newcomer claims the dead slot and finds the lock owned
  // by that slot, i.e. by itself.
  Layer newcomer(Options(name));
  CHECK_EQ(newcomer.slot_index(), dead_slot);
  CHECK_CLEAN(newcomer);
  CHECK_CLEAN(layer);
  CHECK_EQ(newcomer.Stats().slots_attached, 2u);
  CHECK_EQ(ReceiveText(newcomer, "r", 5), std::vector<std::string>{"kept"});
  CHECK_CLEAN(layer);
}

TEST(recovery_reclaims_a_dead_instances_slot_and_waits) {
  TempName name;
  Layer layer(Options(name));
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    ReceiveText(child, "dead.waiting", 1);  // registers a waiter, then dies outside any lock
    kill(getpid(), SIGKILL);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_EQ(layer.Stats().slots_attached, 1u);
  // Attaching reclaims dead slots: the dead waiter's registration no longer holds the record.
  Layer next(Options(name));
  CHECK(!HasChannel(layer, "dead.waiting"));
  CHECK_EQ(layer.Stats().channels, 0u);
  CHECK_EQ(layer.Stats().lock_recoveries, 0u);  // it died outside the lock
  CHECK_CLEAN(layer);
}

// Regression: Enqueue() moves the channel's waiters into pending_ring_ only after linking the node
// (fault point 2); Recover() used to rebuild the queue without ringing anyone, so a receiver
// registered on the channel slept although the dead sender's message was queued.
TEST(recovery_wakes_waiters_of_a_message_left_by_a_dead_sender) {
  TempName name;
  Layer receiver(Options(name));
  CHECK(ReceiveText(receiver, "wake", 1).empty());  // registered as a waiter
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    shmch::g_fault_point = 2;
    SendText(child, "wake", "queued");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  Layer other(Options(name));
  CHECK_CLEAN(other);  // recovery
  CHECK_EQ(other.Stats().queued, 1u);
  CHECK(receiver.TakeBell());
}

// A sender killed after it released the lock but before it rang (fault point 20): the message is
// queued and consistent; nothing rang, so the receiver finds it on its next look (the JS layer's
// housekeeping tick looks at every waiting receive).
TEST(a_sender_killed_between_publish_and_ring_leaves_the_message_findable) {
  TempName name;
  Layer receiver(Options(name));
  CHECK(ReceiveText(receiver, "unrung", 1).empty());
  CHECK(receiver.Arm());
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    shmch::g_fault_point = 20;
    SendText(child, "unrung", "published");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK(!Readable(receiver.doorbell_fd(), 0));
  CHECK_EQ(ReceiveText(receiver, "unrung", 1), (std::vector<std::string>{"published"}));
  CHECK_CLEAN(receiver);
}

// Regression: SharedLockOps::Lock() used to return kOwnerDied without counting it in `recoveries`
// when the lock was owned by the caller's own slot, which happens whenever a newcomer claims a dead
// holder's slot before anyone else took the lock over.
TEST(recovery_by_a_newcomer_is_counted_in_lock_recoveries) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "r", "x");
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    shmch::g_fault_point = 3;
    ReceiveText(child, "r", 1);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  Layer newcomer(Options(name));
  CHECK_CLEAN(newcomer);
  CHECK_EQ(newcomer.Stats().lock_recoveries, 1u);
}

// ---------------------------------------------------------------------------------------------
// The segment lock: a takeover decided on a stale observation must never rob a live holder.

namespace {

// Forks a child that opens the layer and stops itself (SIGSTOP) holding the segment lock at fault
// point 15, i.e. while its constructor's first critical section holds the lock. Returns its pid
// once it is stopped, or -1.
pid_t StartChildStoppedInsideTheLock(const TempName& name) {
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    shmch::g_test_hook = nullptr;
    shmch::g_fault_point = 15;
    shmch::g_fault_action = shmch::FaultAction::kStop;
    try {
      Layer child(Options(name));
      SendText(child, "inside", "child was here");
    } catch (...) {
      _exit(3);
    }
    _exit(0);
  }
  int status = 0;
  if (waitpid(pid, &status, WUNTRACED) != pid || !WIFSTOPPED(status)) return -1;
  return pid;
}

std::string ContinueAndReap(pid_t pid) {
  kill(pid, SIGCONT);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "exit " + std::to_string(WEXITSTATUS(status));
}

// What the test hook of the lock does, once, at one step of the parent's Lock().
struct LockScenario {
  const TempName* name = nullptr;
  pid_t holder = -1;     // close scenario: the live holder, resumed and reaped before the probe
  pid_t newcomer = -1;   // started (stopped inside the lock, in the dead holder's slot) after it
  bool done = false;
};

// However a lock test ends, its stopped children are resumed and reaped (a failed CHECK must not
// leave stopped processes holding ctest's output pipe).
struct ReapScenarioChildren {
  ~ReapScenarioChildren();
};
LockScenario g_scenario;

ReapScenarioChildren::~ReapScenarioChildren() {
  shmch::g_test_hook = nullptr;
  for (pid_t* pid : {&g_scenario.holder, &g_scenario.newcomer}) {
    if (*pid > 0) ContinueAndReap(*pid);
    *pid = -1;
  }
}

void LockScenarioHook(int step) {
  LockScenario& sc = g_scenario;
  if (sc.done) return;
  if (step == shmch::kLockStepBeforeProbe && sc.holder > 0) {
    // The holder we saw in the word finishes, unlocks and closes normally: its slot looks dead.
    ContinueAndReap(sc.holder);
    sc.holder = -1;
    return;
  }
  if (step == shmch::kLockStepProbedDead && sc.holder <= 0) {
    // Preempted between the probe and the CAS: meanwhile a newcomer claims the dead slot and
    // enters the critical section.
    sc.done = true;
    sc.newcomer = StartChildStoppedInsideTheLock(*sc.name);
  }
}

}  // namespace

// Scenario A of the review (finding 1): the holder dies; a waiter probes it dead and is preempted
// before its CAS; a respawned process claims the same slot and takes the lock. The old lock word
// (slot + 1 only) let the waiter's CAS succeed: two processes inside. Now the CAS fails and the
// waiter sees a live holder.
TEST(lock_takeover_after_a_crash_cannot_rob_a_respawned_holder) {
  TempName name;
  Layer waiter(Options(name));
  SendText(waiter, "q", "before");
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    shmch::g_fault_point = 15;
    SendText(child, "q", "never");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  g_scenario = LockScenario{&name};
  ReapScenarioChildren reap;
  shmch::g_test_hook = &LockScenarioHook;
  waiter.SetLockWait(300'000'000);
  bool entered = false;
  std::string error;
  try {
    SendText(waiter, "q", "waiter");
    entered = true;
  } catch (const Error& e) {
    error = shmch::ErrorCodeName(e.code());
  }
  shmch::g_test_hook = nullptr;
  pid_t newcomer = g_scenario.newcomer;
  CHECK(newcomer > 0);
  // The newcomer is stopped inside the critical section: the waiter must not have got in.
  CHECK(!entered);
  CHECK_EQ(error, std::string("EBUSY"));
  g_scenario.newcomer = -1;
  CHECK_EQ(ContinueAndReap(newcomer), std::string("exit 0"));
  waiter.SetLockWait(UINT64_MAX);
  SendText(waiter, "q", "after");
  CHECK_CLEAN(waiter);
  CHECK_EQ(ReceiveText(waiter, "q", 10), (std::vector<std::string>{"before", "after"}));
  CHECK_EQ(ReceiveText(waiter, "inside", 10), std::vector<std::string>{"child was here"});
}

// Scenario B (no crash at all): the waiter sees a live holder, which then unlocks and closes; the
// waiter probes its slot dead and is preempted before the CAS; a newcomer claims the slot and
// takes the lock normally.
TEST(lock_takeover_after_a_close_cannot_rob_a_newcomer_in_the_same_slot) {
  TempName name;
  Layer waiter(Options(name));
  pid_t holder = StartChildStoppedInsideTheLock(name);
  CHECK(holder > 0);
  g_scenario = LockScenario{&name, holder};
  ReapScenarioChildren reap;
  shmch::g_test_hook = &LockScenarioHook;
  waiter.SetLockWait(300'000'000);
  bool entered = false;
  std::string error;
  try {
    SendText(waiter, "q", "waiter");
    entered = true;
  } catch (const Error& e) {
    error = shmch::ErrorCodeName(e.code());
  }
  shmch::g_test_hook = nullptr;
  pid_t newcomer = g_scenario.newcomer;
  CHECK(g_scenario.holder == -1);  // the first holder was resumed and closed
  CHECK(newcomer > 0);
  CHECK(!entered);
  CHECK_EQ(error, std::string("EBUSY"));
  g_scenario.newcomer = -1;
  CHECK_EQ(ContinueAndReap(newcomer), std::string("exit 0"));
  waiter.SetLockWait(UINT64_MAX);
  SendText(waiter, "q", "after");
  CHECK_CLEAN(waiter);
  CHECK_EQ(ReceiveText(waiter, "q", 10), std::vector<std::string>{"after"});
  CHECK_EQ(ReceiveText(waiter, "inside", 10).size(), 2u);
}

namespace {

// The segment lock's fields as another process sees them.
struct LockFields {
  uint32_t word, recovery_pending;
};
LockFields ReadLock(const TempName& name) {
  int fd = open(name.path().c_str(), O_RDONLY);
  LockFields f{~0u, ~0u};
  if (fd < 0) return f;
  shmch::SharedLock lock;
  if (pread(fd, &lock, sizeof lock, offsetof(shmch::Header, lock)) == sizeof lock) {
    f.word = lock.word.load();
    f.recovery_pending = lock.recovery_pending.load();
  }
  close(fd);
  return f;
}

}  // namespace

// Finding 9: a process killed while it sleeps on the lock used to leave `waiters` at +1 forever,
// and every unlock by anyone made a FUTEX_WAKE syscall from then on. Now "someone may sleep" is a
// bit in the word that every unlock clears: after one more lock cycle the word is plain again.
TEST(lock_waiter_killed_in_its_sleep_leaves_nothing_behind) {
  TempName name;
  Layer layer(Options(name));
  pid_t holder = StartChildStoppedInsideTheLock(name);
  CHECK(holder > 0);
  std::fflush(stdout);
  pid_t sleeper = fork();
  if (sleeper == 0) {
    try {
      Layer child(Options(name));  // waits for the stopped holder
    } catch (...) {
    }
    _exit(0);
  }
  CHECK(sleeper > 0);
  bool contended = false;
  for (int i = 0; i < 200 && !contended; ++i) {
    usleep(5000);
    contended = (ReadLock(name).word & shmch::kLockContended) != 0;
  }
  CHECK(contended);  // the sleeper announced itself in the word
  usleep(20000);
  kill(sleeper, SIGKILL);
  waitpid(sleeper, nullptr, 0);
  CHECK_EQ(ContinueAndReap(holder), std::string("exit 0"));
  SendText(layer, "q", "x");  // a lock cycle after the holder's wake-up unlock
  CHECK_EQ(ReceiveText(layer, "q", 1), std::vector<std::string>{"x"});
  CHECK_EQ(ReadLock(name).word, 0u);  // free, and no contended bit: unlocks make no syscall
  CHECK_CLEAN(layer);
}

// Finding 7: Recover() failing inside Critical's constructor (bad_alloc, ECORRUPT) used to leave
// a live process holding the lock: every other process blocked until that one's next call.
// Now the lock is released on the way out and "recovery pending" makes the next holder redo it.
TEST(lock_released_when_recovery_throws_and_the_next_holder_recovers) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "q", "kept");
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    shmch::g_fault_point = 15;
    SendText(child, "q", "never");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  shmch::g_fault_point = 14;  // recovery started (14)
  shmch::g_fault_action = shmch::FaultAction::kThrow;
  bool threw = false;
  try {
    SendText(layer, "q", "fails");
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  shmch::g_fault_point = 0;
  shmch::g_fault_action = shmch::FaultAction::kKill;
  CHECK(threw);
  LockFields after = ReadLock(name);
  CHECK_EQ(after.word, 0u);  // released although the constructor of Critical threw
  CHECK_EQ(after.recovery_pending, 1u);
  // Another process gets in at once and completes the recovery.
  std::string other = RunChild([&] {
    Layer next(Options(name));
    next.SetLockWait(2'000'000'000);
    SendText(next, "q", "other");
    if (!next.Verify().empty()) _exit(6);
    _exit(0);
  });
  CHECK_EQ(other, std::string("exit 0"));
  CHECK_EQ(ReadLock(name).recovery_pending, 0u);
  CHECK_EQ(ReceiveText(layer, "q", 10), (std::vector<std::string>{"kept", "other"}));
  CHECK_CLEAN(layer);
}

// A process killed while it recovers a dead holder's state (fault point 14): the next holder
// takes over from it and recovers again.
TEST(recovery_killed_halfway_is_redone_by_the_next_holder) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "q", "kept");
  CHECK_EQ(RunChildThatDies([&] {
             Layer child(Options(name));
             shmch::g_fault_point = 15;
             SendText(child, "q", "never");
           }),
           std::string("SIGKILL"));
  CHECK_EQ(RunChildThatDies([&] {
             shmch::g_fault_point = 14;
             Layer child(Options(name));  // takes the lock over, dies recovering
           }),
           std::string("SIGKILL"));
  CHECK_EQ(ReadLock(name).recovery_pending, 1u);
  SendText(layer, "q", "after");
  CHECK_EQ(ReadLock(name).recovery_pending, 0u);
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveText(layer, "q", 10), (std::vector<std::string>{"kept", "after"}));
}

// ---------------------------------------------------------------------------------------------
// Another process writing while we read: every shared field is read once, checked, and only the
// checked copy is used.

namespace {

// A second mapping of a layer's segment, as another process has it.
struct ForeignMapping {
  explicit ForeignMapping(const TempName& name) {
    int fd = open(name.path().c_str(), O_RDWR);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) throw std::runtime_error("cannot open " + name.path());
    size = static_cast<size_t>(st.st_size);
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) throw std::runtime_error("cannot map " + name.path());
    base = static_cast<uint8_t*>(p);
  }
  ~ForeignMapping() { munmap(base, size); }
  shmch::Header& header() const { return *reinterpret_cast<shmch::Header*>(base); }
  uint8_t* base;
  size_t size;
};

uint64_t NextRandom(uint64_t& x) {
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

// Flips `field` to `value` for a moment, then puts back what it held.
void Flip(uint32_t* field, uint32_t value) {
  uint32_t saved = __atomic_load_n(field, __ATOMIC_RELAXED);
  __atomic_store_n(field, value, __ATOMIC_RELAXED);
  for (int i = 0; i < 20; ++i) __asm__ __volatile__("" ::: "memory");
  __atomic_store_n(field, saved, __ATOMIC_RELAXED);
  for (int i = 0; i < 20; ++i) __asm__ __volatile__("" ::: "memory");
}

}  // namespace

// Finding 2: Receive checked a block header's length and then copied as many bytes as a second
// load said (SIGSEGV within 10-80 ms); Free re-read the page count before clearing the bitmap;
// Recover and Verify re-read it before marking pages (heap-buffer-overflow under ASan). A thread
// is as good as another process here: it flips block-header and node fields to huge values and
// back while this one sends, receives and verifies.
TEST(concurrent_scribbler_on_block_headers_and_nodes_never_crashes) {
  TempName name;
  std::string how = RunChild([&] {
    Layer layer(Options(name));
    ForeignMapping map(name);
    shmch::Header& h = map.header();
    uint8_t* arena = map.base + h.arena_offset;
    auto* nodes = reinterpret_cast<shmch::Node*>(map.base + h.nodes_offset);
    const uint32_t pages = h.page_count, max_nodes = h.max_nodes;
    // Queues kept 40 deep: live blocks are always there to scribble on.
    for (uint32_t i = 0; i < 80; ++i) {
      std::vector<uint8_t> p = Payload(i, 40 + (i * 1031) % 3000);
      layer.Send("s" + std::to_string(i % 2), p.data(), static_cast<uint32_t>(p.size()));
    }
    std::atomic<bool> stop{false};
    std::thread scribbler([&] {
      uint64_t x = 0x9e3779b97f4a7c15ull;
      while (!stop.load(std::memory_order_relaxed)) {
        uint64_t r = NextRandom(x);
        if ((r >> 60) < 2) {  // now and then a node's block or next index
          uint32_t n = static_cast<uint32_t>((r >> 32) % 64);
          if (r & 1) Flip(&nodes[n].block, static_cast<uint32_t>((r >> 40) % pages));
          else Flip(&nodes[n].next, static_cast<uint32_t>((r >> 40) % (max_nodes + 8)));
          continue;
        }
        // Mostly a live block's page count or length, huge half of the time: a check that reads
        // the real value and a use that reads again gets the huge one.
        for (uint32_t page = 0; page < 4096 && page < pages; ++page) {
          auto* block = reinterpret_cast<uint32_t*>(arena + uint64_t{page} * shmch::kPageSize);
          if (__atomic_load_n(&block[0], __ATOMIC_RELAXED) != shmch::kBlockMagic) continue;
          for (int i = 0; i < 20; ++i) Flip(&block[(r & 2) ? 2 : 3], 0x7ffffff0u);
        }
      }
    });
    struct JoinScribbler {  // however the loop ends, the thread is stopped before it is destroyed
      std::atomic<bool>& stop;
      std::thread& thread;
      ~JoinScribbler() {
        stop = true;
        if (thread.joinable()) thread.join();
      }
    } join_scribbler{stop, scribbler};
    uint64_t deadline = shmch::MonotonicMs() + 2000;
    uint32_t round = 0, failures = 0;
    while (shmch::MonotonicMs() < deadline) {
      ++round;
      try {
        for (uint32_t i = 0; i < 4; ++i) {
          std::vector<uint8_t> p = Payload(round + i, 40 + (round * 97 + i * 1031) % 3000);
          layer.Send("s" + std::to_string(i % 2), p.data(), static_cast<uint32_t>(p.size()));
        }
      } catch (const Error&) {
        ++failures;  // typed errors are fine; a crash is not
      }
      try {
        shmch::ReceivedBatch batch;
        layer.Receive({{"s0", 4}, {"s1", 4}}, batch);
      } catch (const Error&) {
        ++failures;
      }
      if (round % 16 == 0) {
        try {
          layer.Verify();
        } catch (const Error&) {
          ++failures;
        }
      }
    }
    stop = true;
    scribbler.join();
    layer.Flush();  // rebuilds everything from nothing: whatever the scribbler left is gone
    if (!layer.Verify().empty()) _exit(7);
    std::printf("  %u rounds under a scribbler, %u typed errors\n", round, failures);
    std::fflush(stdout);
    _exit(0);
  });
  CHECK_EQ(how, std::string("exit 0"));
}

// Finding 6: a scribbled Header::state made the next process that attached initialise the live
// segment again (ftruncate to 0 and memset): every attached process got SIGBUS. Now a segment
// with live slots is known to be initialised; the newcomer repairs the state word and attaches.
TEST(scribbled_segment_state_never_reinitialises_a_live_segment) {
  TempName name;
  Layer first(Options(name));
  std::string how = RunChild([&] {
    Layer victim(Options(name));
    ForeignMapping map(name);
    std::atomic<bool> stop{false};
    std::thread scribbler([&] {
      while (!stop.load()) {
        Flip(reinterpret_cast<uint32_t*>(&map.header().state), 0);
        usleep(100);
      }
    });
    uint64_t deadline = shmch::MonotonicMs() + 600;
    uint32_t rounds = 0;
    struct StopScribbler {
      std::atomic<bool>& stop;
      std::thread& thread;
      ~StopScribbler() {
        stop = true;
        thread.join();
      }
    } stop_scribbler{stop, scribbler};
    while (shmch::MonotonicMs() < deadline) {
      SendText(victim, "v", "m" + std::to_string(rounds));
      if (ReceiveText(victim, "v", 1) != std::vector<std::string>{"m" + std::to_string(rounds)}) _exit(6);
      if (rounds++ % 64 == 0) {
        Layer newcomer(Options(name));  // attaches while the state word may read 0
        if (rounds < 64 * 50) SendText(newcomer, "n", "x");
      }
    }
    _exit(0);
  });
  CHECK_EQ(how, std::string("exit 0"));
  uint32_t zero = 0;
  PokeSegment(name, offsetof(shmch::Header, state), &zero, sizeof zero);
  Layer newcomer(Options(name));
  CHECK_EQ(ReceiveText(first, "n", 1000).empty(), false);  // the messages sent before survived
  CHECK_CLEAN(first);
  CHECK_CLEAN(newcomer);
}

// ---------------------------------------------------------------------------------------------
// Tables and instances.

TEST(channel_table_full) {
  TempName name;
  Layer layer(Options(name));
  for (int c = 0; c < 128; ++c) SendText(layer, "ch" + std::to_string(c), "x");
  CHECK_THROWS(SendText(layer, "ch-one-too-many", "x"), ErrorCode::kTableFull);
  // A group whose first member cannot get a channel record is not left behind, empty.
  CHECK_THROWS(layer.GroupAdd("newgroup", "ch-one-too-many"), ErrorCode::kTableFull);
  CHECK(layer.ListGroups(100).empty());
  // An existing channel can still join.
  layer.GroupAdd("newgroup", "ch0");
  CHECK_EQ(layer.Stats().channels, 128u);
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveText(layer, "ch5", 1), std::vector<std::string>{"x"});  // releases the record
  SendText(layer, "ch-one-too-many", "now there is room");
  CHECK_CLEAN(layer);
}

TEST(member_table_full) {
  TempName name;
  Layer layer(Options(name));  // 256 memberships
  for (int m = 0; m < 256; ++m) layer.GroupAdd("g" + std::to_string(m / 16), "c" + std::to_string(m % 16));
  CHECK_EQ(layer.Stats().members, 256u);
  CHECK_THROWS(layer.GroupAdd("g-new", "c-new"), ErrorCode::kTableFull);
  CHECK_EQ(layer.Stats().groups, 16u);  // the would-be group was removed again
  CHECK(!HasChannel(layer, "c-new"));  // and so was the would-be channel
  layer.GroupAdd("g0", "c0");          // renewing an existing membership needs no record
  CHECK_CLEAN(layer);
  layer.GroupDiscard("g0", "c0");
  layer.GroupAdd("g-new", "c-new");
  CHECK_EQ(GroupSendText(layer, "g-new", "hi"), 1u);
  CHECK_CLEAN(layer);
}

// Finding 8: Receive created records from names it never validated: a 600-byte name was copied
// into the 200-byte name field, over the next record and the bucket table.
TEST(receive_and_unwait_refuse_bad_names_without_damage) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "ok", "kept");
  shmch::ReceivedBatch batch;
  CHECK_THROWS(layer.Receive({{std::string(600, 'z'), 1}}, batch), ErrorCode::kInvalidArgument);
  CHECK_THROWS(layer.Receive({{"ok", 1}, {std::string(201, 'z'), 1}}, batch), ErrorCode::kInvalidArgument);
  CHECK_THROWS(layer.Receive({{"bad name", 1}}, batch), ErrorCode::kInvalidArgument);
  CHECK_THROWS(layer.Receive({{"", 1}}, batch), ErrorCode::kInvalidArgument);
  CHECK_THROWS(layer.Unwait({std::string(600, 'z')}), ErrorCode::kInvalidArgument);
  CHECK(batch.request_of.empty());
  CHECK_EQ(layer.Stats().channels, 1u);
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveText(layer, "ok", 5), std::vector<std::string>{"kept"});
}

TEST(receive_batch_naming_a_channel_twice_is_refused_without_damage) {
  TempName name;
  Layer layer(Options(name));
  SendText(layer, "dup", "one");
  SendText(layer, "dup", "two");
  shmch::ReceivedBatch batch;
  CHECK_THROWS(layer.Receive({{"dup", 1}, {"dup", 1}}, batch), ErrorCode::kInvalidArgument);
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveText(layer, "dup", 5), (std::vector<std::string>{"one", "two"}));
  CHECK_CLEAN(layer);
}

TEST(receive_skips_expired_messages_inside_a_queue) {
  TempName name;
  LayerOptions fast = Options(name);
  fast.expiry_ms = 1;
  Layer a(Options(name));
  Layer b(fast);
  SendText(a, "mix", "a1");
  SendText(b, "mix", "b-expires");
  SendText(a, "mix", "a2");
  SendText(b, "mix", "b-expires-too");
  SendText(a, "mix", "a3");
  usleep(20'000);
  CHECK_EQ(ReceiveText(a, "mix", 2), (std::vector<std::string>{"a1", "a2"}));
  CHECK_CLEAN(a);
  CHECK_EQ(ReceiveText(a, "mix", 2), (std::vector<std::string>{"a3"}));
  shmch::LayerStats s = a.Stats();
  CHECK_EQ(s.messages_expired, 2u);
  CHECK_EQ(s.messages_received, 3u);
  CHECK_EQ(s.queued, 0u);
  CHECK_CLEAN(a);
}

TEST(closing_an_instance_withdraws_its_waits) {
  TempName name;
  Layer keeper(Options(name));
  {
    Layer waiter(Options(name));
    CHECK(ReceiveText(waiter, "awaited", 1).empty());
    CHECK(HasChannel(keeper, "awaited"));
  }
  CHECK(!HasChannel(keeper, "awaited"));
  CHECK_EQ(keeper.Stats().slots_attached, 1u);
  CHECK_CLEAN(keeper);
}

TEST(flush_rings_instances_waiting_elsewhere) {
  TempName name;
  Layer waiter(Options(name));
  Layer flusher(Options(name));
  CHECK(ReceiveText(waiter, "w", 1).empty());
  flusher.Flush();
  CHECK(waiter.TakeBell());
  CHECK_CLEAN(flusher);
}

TEST(all_slots_taken_gives_table_full) {
  TempName name;
  std::vector<std::unique_ptr<Layer>> layers;
  for (uint32_t i = 0; i < shmch::kMaxSlots; ++i) layers.push_back(std::make_unique<Layer>(Options(name)));
  CHECK_EQ(layers.back()->Stats().slots_attached, shmch::kMaxSlots);
  CHECK_THROWS(Layer one_more(Options(name)), ErrorCode::kTableFull);
  layers[17].reset();  // a slot frees up: the next instance gets it
  Layer again(Options(name));
  CHECK_EQ(again.slot_index(), 17u);
  SendText(*layers[0], "x", "y");
  CHECK_EQ(ReceiveText(again, "x", 1), std::vector<std::string>{"y"});
  CHECK_CLEAN(again);
}

// Finding 11: reclaiming a dead instance scanned the whole member table once per '!' channel it
// had in a group (16k inboxes: 0.4-1.6 s under the lock). Now one pass removes them all; what
// stays must be exactly what belonged to others.
TEST(reclaiming_a_dead_instance_drops_all_its_inboxes_and_memberships_at_once) {
  TempName name;
  LayerOptions options = Options(name);
  options.segment.max_channels = 512;
  options.segment.max_members = 1024;
  options.segment.max_nodes = 4096;
  options.segment.size = 8u << 20;
  Layer survivor(options);
  survivor.GroupAdd("room", "survivor.kept");
  SendText(survivor, "survivor.kept", "mine");
  std::string how = RunChild([&] {
    LayerOptions mine = options;
    mine.client_id = "dying1";
    Layer child(mine);
    for (int i = 0; i < 300; ++i) {
      std::string inbox = "conn.dying1!" + std::to_string(i);
      child.GroupAdd("room", inbox);
      child.GroupAdd("g" + std::to_string(i % 7), inbox);
      SendText(child, inbox, "queued");
    }
    kill(getpid(), SIGKILL);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  shmch::LayerStats before = survivor.Stats();
  CHECK_EQ(before.members, 601u);
  CHECK(survivor.Maintain(nullptr));
  shmch::LayerStats after = survivor.Stats();
  CHECK_EQ(after.members, 1u);
  CHECK_EQ(after.groups, 1u);
  CHECK_EQ(after.channels, 1u);
  CHECK_EQ(after.queued, 1u);
  CHECK_EQ(after.messages_orphaned - before.messages_orphaned, 300u);
  CHECK_EQ(GroupSendText(survivor, "room", "hello"), 1u);
  CHECK_EQ(ReceiveText(survivor, "survivor.kept", 5), (std::vector<std::string>{"mine", "hello"}));
  CHECK_CLEAN(survivor);
}

// Finding 13: groupSend matched every member's name against the channelCapacity globs under the
// lock. The capacity is now cached in the channel record with a tag of the options it came from:
// a process with other options still gets its own capacity.
TEST(channel_capacity_is_cached_per_record_but_each_options_get_their_own) {
  TempName name;
  LayerOptions tight = Options(name);
  tight.channel_capacity = {{"limited.*", 2}};
  LayerOptions loose = Options(name);
  loose.channel_capacity = {{"limited.*", 4}};
  Layer a(tight);
  Layer b(loose);
  a.GroupAdd("g", "limited.x");
  a.GroupAdd("g", "other");
  for (int i = 0; i < 6; ++i) GroupSendText(a, "g", "m");
  CHECK_EQ(ReceiveText(a, "limited.x", 10).size(), 2u);  // the creator's (and a's) capacity
  CHECK_EQ(ReceiveText(a, "other", 10).size(), 6u);      // the default, 100
  for (int i = 0; i < 6; ++i) GroupSendText(b, "g", "m");
  CHECK_EQ(ReceiveText(b, "limited.x", 10).size(), 4u);  // b's options, not the record's
  SendText(a, "limited.x", "1");
  SendText(a, "limited.x", "2");
  CHECK_THROWS(SendText(a, "limited.x", "3"), ErrorCode::kChannelFull);
  SendText(b, "limited.x", "3");
  SendText(b, "limited.x", "4");
  CHECK_THROWS(SendText(b, "limited.x", "5"), ErrorCode::kChannelFull);
  CHECK_CLEAN(a);
}

// Finding 13: every process swept every table for expired entries under the lock every 2 s. Now
// one sweep per second serves the whole segment, done by whichever process comes first.
TEST(expiry_sweep_runs_once_per_interval_for_all_processes) {
  TempName name;
  LayerOptions options = Options(name);
  options.expiry_ms = 30;
  Layer a(options);
  Layer b(options);
  CHECK(a.Maintain());  // a swept: the next second is covered
  SendText(a, "q", "expires");
  usleep(60'000);
  CHECK(b.Maintain());  // not b's turn: the expired message is still there
  CHECK_EQ(b.Stats().queued, 1u);
  CHECK_EQ(b.Stats().messages_expired, 0u);
  usleep(1'000'000);
  CHECK(b.Maintain());  // b's turn now
  CHECK_EQ(b.Stats().queued, 0u);
  CHECK_EQ(b.Stats().messages_expired, 1u);
  CHECK_CLEAN(a);
}

// The reclaimer dies between taking the dead instance's inboxes out of their groups and dropping
// them (fault point 17): the next holder recovers, the next reclaim finishes the job.
TEST(reclaimer_killed_between_memberships_and_channels_leaves_nothing) {
  TempName name;
  LayerOptions options = Options(name);
  Layer survivor(options);
  survivor.GroupAdd("room", "survivor.kept");
  CHECK_EQ(RunChild([&] {
             LayerOptions mine = options;
             mine.client_id = "dying2";
             Layer child(mine);
             for (int i = 0; i < 20; ++i) {
               child.GroupAdd("room", "conn.dying2!" + std::to_string(i));
               SendText(child, "conn.dying2!" + std::to_string(i), "queued");
             }
             kill(getpid(), SIGKILL);
           }),
           std::string("SIGKILL"));
  CHECK_EQ(RunChildThatDies([&] {
             shmch::g_fault_point = 17;
             Layer reclaimer(options);  // reclaims the dead slot as it attaches
           }),
           std::string("SIGKILL"));
  CHECK(survivor.Maintain());
  CHECK_CLEAN(survivor);
  shmch::LayerStats s = survivor.Stats();
  CHECK_EQ(s.channels, 1u);
  CHECK_EQ(s.members, 1u);
  CHECK_EQ(s.queued, 0u);
  CHECK_EQ(GroupSendText(survivor, "room", "hi"), 1u);
  CHECK_CLEAN(survivor);
}

TEST(maintain_drops_expired_messages_and_memberships) {
  TempName name;
  LayerOptions o = Options(name);
  o.expiry_ms = 1;
  o.group_expiry_ms = 1;
  Layer layer(o);
  SendText(layer, "stale", "x");
  layer.GroupAdd("g", "member");
  usleep(20'000);
  layer.Maintain();
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.queued, 0u);
  CHECK_EQ(s.members, 0u);
  CHECK_EQ(s.groups, 0u);
  CHECK_EQ(s.channels, 0u);
  CHECK_EQ(s.messages_expired, 1u);
  CHECK_CLEAN(layer);
}

// ---------------------------------------------------------------------------------------------
// Segment creation and validation.

TEST(segment_with_bad_magic_is_refused) {
  TempName name;
  { Layer layer(Options(name)); }
  uint64_t bad = shmch::kMagic ^ 1;
  PokeSegment(name, offsetof(shmch::Header, magic), &bad, sizeof bad);
  CHECK_THROWS(Layer layer(Options(name)), ErrorCode::kVersionMismatch);
}

TEST(segment_with_other_layout_version_is_refused) {
  TempName name;
  { Layer layer(Options(name)); }
  uint32_t other = shmch::kLayoutVersion + 1;
  PokeSegment(name, offsetof(shmch::Header, layout_version), &other, sizeof other);
  CHECK_THROWS(Layer layer(Options(name)), ErrorCode::kVersionMismatch);
  // Restoring the version makes it usable again: the refusal changed nothing.
  uint32_t mine = shmch::kLayoutVersion;
  PokeSegment(name, offsetof(shmch::Header, layout_version), &mine, sizeof mine);
  Layer layer(Options(name));
  CHECK_CLEAN(layer);
}

TEST(segment_with_other_abi_tag_is_refused) {
  TempName name;
  Layer keep(Options(name));  // a live attacher does not change the verdict
  uint32_t other = shmch::kAbiTag ^ 0x100;
  PokeSegment(name, offsetof(shmch::Header, abi_tag), &other, sizeof other);
  CHECK_THROWS(Layer layer(Options(name)), ErrorCode::kVersionMismatch);
}

TEST(segment_too_small_is_refused) {
  TempName name;
  LayerOptions o = Options(name);
  o.segment.size = 4096;
  CHECK_THROWS(Layer layer(o), ErrorCode::kInvalidArgument);
  o.segment.size = 128u << 10;  // above the header, below the tables
  CHECK_THROWS(Layer layer(o), ErrorCode::kInvalidArgument);
  o.segment.size = 2u << 20;
  o.segment.max_message_size = 4u << 20;  // larger than the arena
  CHECK_THROWS(Layer layer(o), ErrorCode::kInvalidArgument);
  o.segment.max_message_size = 0;
  CHECK_THROWS(Layer layer(o), ErrorCode::kInvalidArgument);
  // A refused creation leaves no segment behind.
  CHECK(access(name.path().c_str(), F_OK) != 0);
  o.segment.max_message_size = 1024;
  Layer layer(o);
  CHECK_CLEAN(layer);
}

TEST(segment_attach_uses_the_creators_tables) {
  TempName name;
  Layer first(Options(name));
  LayerOptions different = Options(name);
  different.segment.size = 8u << 20;
  different.segment.max_nodes = 5;
  Layer second(different);
  shmch::LayerStats s = second.Stats();
  CHECK_EQ(s.segment_bytes, uint64_t{2u << 20});
  CHECK_EQ(s.nodes_free, 2048u);
  CHECK_CLEAN(second);
}

TEST(segment_destroy_removes_the_name) {
  TempName name;
  {
    Layer layer(Options(name));
    SendText(layer, "d", "x");
    CHECK(access(name.path().c_str(), F_OK) == 0);
    CHECK(Layer::Destroy(name.str()));
    CHECK(layer.IsUnlinked());
    SendText(layer, "d", "still works on its own mapping");
    CHECK_CLEAN(layer);
  }
  CHECK(access(name.path().c_str(), F_OK) != 0);
  CHECK(!Layer::Destroy(name.str()));
  Layer fresh(Options(name));  // a new, empty segment
  CHECK(ReceiveText(fresh, "d", 5).empty());
  CHECK_CLEAN(fresh);
}

// ---------------------------------------------------------------------------------------------
// Lock hold times (lock_hold.h): per operation, in this instance's private memory.

TEST(lock_hold_buckets_bound_every_duration_within_a_quarter) {
  using H = shmch::LockHoldHistogram;
  for (uint64_t v : {0ull, 1ull, 3ull, 4ull, 5ull, 7ull, 8ull, 999ull, 1000ull, 1023ull, 1024ull,
                     1025ull, 3'000'000ull, 123'456'789ull, (1ull << 40) + 12345ull, ~0ull}) {
    int b = H::BucketOf(v);
    CHECK(b >= 0 && b < H::kBuckets);
    CHECK(H::UpperEdgeOf(b) >= v);
    if (b > 0) CHECK(H::UpperEdgeOf(b - 1) < v);  // the buckets are contiguous and ordered
    CHECK(static_cast<double>(H::UpperEdgeOf(b)) <= static_cast<double>(v) * 1.25 + 1);
  }
  H h;
  CHECK_EQ(h.Percentile(0.99), 0u);
  for (int i = 0; i < 99; ++i) h.Record(1000);
  h.Record(50'000);
  CHECK_EQ(h.count(), 100u);
  CHECK_EQ(h.max_ns(), 50'000u);
  CHECK_EQ(h.Percentile(0.50), H::UpperEdgeOf(H::BucketOf(1000)));
  CHECK_EQ(h.Percentile(0.99), H::UpperEdgeOf(H::BucketOf(1000)));  // rank 99 of 100
  CHECK_EQ(h.Percentile(1.0), 50'000u);  // capped at the maximum, not the bucket's edge
}

namespace {
int g_hold_sleeps_left = 0;
void SleepWhileHoldingTheLock(int step) {
  if (step != shmch::kLockStepHeld || g_hold_sleeps_left <= 0) return;
  --g_hold_sleeps_left;
  usleep(3000);
}
struct ClearTestHook {
  ~ClearTestHook() { shmch::g_test_hook = nullptr; }
};
}  // namespace

TEST(lock_hold_time_of_a_critical_section_lands_in_its_operations_bucket) {
  using shmch::LockOp;
  using H = shmch::LockHoldHistogram;
  TempName name;
  Layer layer(Options(name));
  CHECK(layer.lock_hold()[LockOp::kOther].count() >= 1);  // attaching took the lock
  for (int i = 0; i < 20; ++i) SendText(layer, "q", "m" + std::to_string(i));
  CHECK_EQ(ReceiveText(layer, "q", 100).size(), 20u);
  const auto& stats = layer.lock_hold();
  CHECK_EQ(stats[LockOp::kSend].count(), 20u);
  CHECK_EQ(stats[LockOp::kReceive].count(), 1u);
  CHECK_EQ(stats[LockOp::kGroupAdd].count(), 0u);

  // 3 ms of sleep inside one groupAdd's critical section: one groupAdd sample of at least 3 ms,
  // no longer than the whole call took, in the bucket of its maximum.
  ClearTestHook clear;
  g_hold_sleeps_left = 1;
  shmch::g_test_hook = &SleepWhileHoldingTheLock;
  uint64_t began = shmch::MonotonicNs();
  layer.GroupAdd("g", "q");
  uint64_t call_ns = shmch::MonotonicNs() - began;
  shmch::g_test_hook = nullptr;
  CHECK_EQ(g_hold_sleeps_left, 0);
  const H& add = stats[LockOp::kGroupAdd];
  CHECK_EQ(add.count(), 1u);
  CHECK(add.max_ns() >= 3'000'000u);
  CHECK(add.max_ns() <= call_ns);
  CHECK_EQ(add.bucket(H::BucketOf(add.max_ns())), 1u);
  CHECK_EQ(add.Percentile(0.99), add.max_ns());
  CHECK(H::UpperEdgeOf(H::BucketOf(add.max_ns())) >= 3'000'000u);
  CHECK_EQ(stats[LockOp::kSend].count(), 20u);  // the sleep was counted once, as a groupAdd

  // A holder killed inside the lock: the next critical section rebuilds derived state, and its
  // time is counted as a recovery, not as the send it began as.
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    shmch::g_fault_point = 1;
    SendText(child, "q", "never");
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  SendText(layer, "q", "after");
  CHECK_EQ(stats[LockOp::kRecover].count(), 1u);
  CHECK_EQ(stats[LockOp::kSend].count(), 20u);
  SendText(layer, "q", "again");
  CHECK_EQ(stats[LockOp::kSend].count(), 21u);
  layer.ResetLockHold();
  CHECK_EQ(stats[LockOp::kSend].count(), 0u);
  CHECK_CLEAN(layer);
}

// ---------------------------------------------------------------------------------------------
// Large messages: what a receive allocates, and which pages a stream of them faults in.

namespace {

long MinorFaults() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

LayerOptions StreamOptions(const TempName& name) {
  LayerOptions o = Options(name);
  o.segment.size = 128u << 20;
  o.segment.max_message_size = 8u << 20;
  o.capacity = 8;
  return o;
}

}  // namespace

TEST(large_receive_leaves_room_for_the_bindings_trailer) {
  // The binding appends 8 bytes per message and a count after the payloads; a buffer sized to the
  // payload alone grew to twice its size there (a second copy of 5 MB, 10 MB of fresh pages).
  TempName name;
  Layer layer(StreamOptions(name));
  const uint32_t size = 5'000'000;
  auto p = Payload(1, size);
  layer.Send("big", p.data(), size);
  shmch::ReceivedBatch batch;
  layer.Receive({{"big", 1}}, batch);
  CHECK_EQ(batch.bytes.size(), size_t{size});
  CHECK(batch.bytes.capacity() >= batch.bytes.size() + 8 * batch.length_of.size() + 4);
  CHECK(batch.bytes.capacity() < size_t{size} + (64u << 10));
  CHECK(std::memcmp(batch.bytes.data(), p.data(), size) == 0);
  CHECK_CLEAN(layer);
}

TEST(large_message_stream_reuses_warm_arena_pages) {
  // A producer fills the channel with 8 messages of 5 MB, the consumer takes them all at once,
  // and again. The chunks the consumer empties must be kept for the producer's next round:
  // punching all but a few MiB of them made every round fault in ~35 MB of fresh pages again
  // (~1,200 page faults per message).
  TempName name;
  Layer layer(StreamOptions(name));
  const uint32_t size = 5'000'000;
  auto p = Payload(2, size);
  shmch::ReceivedBatch batch;
  batch.bytes.reserve(8ull * size + 4096);
  auto round = [&] {
    for (int i = 0; i < 8; ++i) layer.Send("stream", p.data(), size);
    batch.bytes.clear();
    batch.request_of.clear();
    batch.length_of.clear();
    layer.Receive({{"stream", 8}}, batch);
    CHECK_EQ(batch.length_of.size(), size_t{8});
  };
  for (int i = 0; i < 2; ++i) round();  // the first round faults its pages in, once
  long before = MinorFaults();
  const int rounds = 4;
  for (int i = 0; i < rounds; ++i) round();
  long per_message = (MinorFaults() - before) / (rounds * 8);
  // 5 MB of fresh pages is ~1,220 faults; a tenth of that allows for the odd straggler.
  CHECK(per_message < 120);
  CHECK_CLEAN(layer);
}

// ---------------------------------------------------------------------------------------------
// Large payloads copied outside the segment lock (payload.cc): the steps and a death at each.

namespace {

constexpr uint32_t kLargeTestBytes = 100'000;  // above kOutOfLockBytes, below Options' 256 KiB

void SendLarge(Layer& layer, std::string_view channel, uint32_t id) {
  auto p = Payload(id, kLargeTestBytes);
  layer.Send(channel, p.data(), kLargeTestBytes);
}

// The ids of the large messages received (each checked byte for byte against Payload(id)).
std::vector<uint32_t> ReceiveLarge(Layer& layer, const std::string& channel, uint32_t wanted) {
  shmch::ReceivedBatch batch;
  layer.Receive({{channel, wanted}}, batch);
  std::vector<uint32_t> ids;
  size_t at = 0;
  for (uint32_t length : batch.length_of) {
    if (length != kLargeTestBytes) throw std::runtime_error("a large message of " + std::to_string(length) + " bytes");
    uint32_t id = 0;
    for (; id < 64; ++id) {
      auto p = Payload(id, kLargeTestBytes);
      if (std::memcmp(batch.bytes.data() + at, p.data(), kLargeTestBytes) == 0) break;
    }
    ids.push_back(id);
    at += length;
  }
  return ids;
}

}  // namespace

TEST(large_send_and_receive_round_trip_and_free_their_blocks) {
  TempName name;
  Layer layer(Options(name));
  static_assert(kLargeTestBytes >= shmch::kOutOfLockBytes, "the test must take the large path");
  for (uint32_t id = 0; id < 5; ++id) SendLarge(layer, "big", id);
  SendText(layer, "big", "small");  // the two paths keep one order
  SendLarge(layer, "big", 5);
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveLarge(layer, "big", 3), (std::vector<uint32_t>{0, 1, 2}));
  CHECK_CLEAN(layer);
  shmch::ReceivedBatch batch;
  layer.Receive({{"big", 4}}, batch);
  CHECK_EQ(batch.length_of, (std::vector<uint32_t>{kLargeTestBytes, kLargeTestBytes, 5, kLargeTestBytes}));
  auto p4 = Payload(4, kLargeTestBytes);
  CHECK(std::memcmp(batch.bytes.data() + kLargeTestBytes, p4.data(), kLargeTestBytes) == 0);
  CHECK(std::memcmp(batch.bytes.data() + 2 * kLargeTestBytes, "small", 5) == 0);
  shmch::LayerStats s = layer.Stats();
  CHECK_EQ(s.messages_sent, 7u);
  CHECK_EQ(s.messages_received, 7u);
  CHECK_EQ(s.arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(large_send_refuses_a_full_channel_before_copying) {
  TempName name;
  LayerOptions o = Options(name);
  o.capacity = 2;
  Layer layer(o);
  SendLarge(layer, "big", 0);
  SendLarge(layer, "big", 1);
  bool refused = false;
  try {
    SendLarge(layer, "big", 2);
  } catch (const Error& e) {
    refused = e.code() == ErrorCode::kChannelFull;
  }
  CHECK(refused);
  CHECK_EQ(layer.Stats().sends_refused_full, 1u);
  CHECK_EQ(layer.Stats().arena_used_bytes, 2u * ((kLargeTestBytes + 32 + 63) / 64 * 64));
  CHECK_CLEAN(layer);
  CHECK_EQ(ReceiveLarge(layer, "big", 5), (std::vector<uint32_t>{0, 1}));
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
}

TEST(large_send_copies_without_holding_the_lock) {
  // The sender stops itself after its copy, before publishing: the lock is free all that time, so
  // others send and receive; the message appears only when it is published.
  TempName name;
  Layer layer(Options(name));
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    Layer child(Options(name));
    shmch::g_fault_action = shmch::FaultAction::kStop;
    shmch::g_fault_point = 23;
    SendLarge(child, "big", 7);
    _exit(0);
  }
  int status = 0;
  CHECK(waitpid(pid, &status, WUNTRACED) == pid);
  CHECK(WIFSTOPPED(status));
  layer.SetLockWait(100'000'000);  // 100 ms: a holder stopped inside the lock would be kBusy
  SendText(layer, "small", "passes");
  CHECK_EQ(ReceiveText(layer, "small", 5), std::vector<std::string>{"passes"});
  CHECK(ReceiveLarge(layer, "big", 5).empty());  // reserved, not published
  CHECK_CLEAN(layer);
  kill(pid, SIGCONT);
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK_EQ(ReceiveLarge(layer, "big", 5), std::vector<uint32_t>{7});
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(recovery_large_sender_dies_holding_a_reserved_block) {
  TempName name;
  Layer layer(Options(name));
  SendLarge(layer, "big", 0);
  const uint64_t used = layer.Stats().arena_used_bytes;
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    shmch::g_fault_point = 22;  // inside the lock: block reserved and held, nothing copied
    SendLarge(child, "big", 1);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);  // takes the lock over and recovers: the dead slot's hold is released
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  CHECK_EQ(layer.Stats().arena_used_bytes, used);
  CHECK_EQ(ReceiveLarge(layer, "big", 5), std::vector<uint32_t>{0});
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(recovery_large_sender_dies_between_copy_and_publish) {
  TempName name;
  Layer layer(Options(name));
  SendLarge(layer, "big", 0);
  const uint64_t used = layer.Stats().arena_used_bytes;
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    shmch::g_fault_point = 23;  // outside the lock: copied, not published
    SendLarge(child, "big", 1);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);  // no lock was held: the dead slot still holds its block, consistently
  CHECK_EQ(layer.Stats().lock_recoveries, 0u);
  CHECK(layer.Stats().arena_used_bytes > used);
  layer.Maintain();  // reclaims the dead slot, and its hold with it
  CHECK_EQ(layer.Stats().arena_used_bytes, used);
  CHECK_EQ(layer.Stats().slots_attached, 1u);
  CHECK_EQ(ReceiveLarge(layer, "big", 5), std::vector<uint32_t>{0});
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(recovery_large_sender_dies_after_linking_before_dropping_its_hold) {
  TempName name;
  Layer layer(Options(name));
  SendLarge(layer, "big", 0);
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    shmch::g_fault_point = 24;  // inside the lock: queued, the hold still recorded
    SendLarge(child, "big", 1);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  CHECK_EQ(layer.Stats().queued, 2u);
  CHECK_EQ(ReceiveLarge(layer, "big", 5), (std::vector<uint32_t>{0, 1}));  // it was published
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);  // and its block freed once, by the receive
  CHECK_CLEAN(layer);
}

TEST(recovery_large_receiver_dies_after_popping_before_copying) {
  TempName name;
  Layer layer(Options(name));
  for (uint32_t id = 0; id < 5; ++id) SendLarge(layer, "big", id);
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    shmch::g_fault_point = 25;  // inside the lock: two popped into holds, nothing copied
    ReceiveLarge(child, "big", 2);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  CHECK_EQ(layer.Stats().lock_recoveries, 1u);
  // What it popped went with it (at most once); the rest is intact and nothing leaked.
  CHECK_EQ(ReceiveLarge(layer, "big", 5), (std::vector<uint32_t>{2, 3, 4}));
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(recovery_large_receiver_dies_after_copying_before_releasing) {
  TempName name;
  Layer layer(Options(name));
  for (uint32_t id = 0; id < 3; ++id) SendLarge(layer, "big", id);
  std::string how = RunChildThatDies([&] {
    Layer child(Options(name));
    shmch::g_fault_point = 26;  // outside the lock: copied out, holds not released
    ReceiveLarge(child, "big", 1);
  });
  CHECK_EQ(how, std::string("SIGKILL"));
  CHECK_CLEAN(layer);
  CHECK_EQ(layer.Stats().lock_recoveries, 0u);
  layer.Maintain();  // reclaims the dead slot and releases its hold
  CHECK_EQ(ReceiveLarge(layer, "big", 5), (std::vector<uint32_t>{1, 2}));
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

TEST(large_receive_reports_a_payload_damaged_in_shared_memory) {
  TempName name;
  Layer layer(Options(name));
  SendLarge(layer, "big", 0);
  SendText(layer, "big", "after");
  // Flip a byte in the middle of the first block's payload (the arena's first pages).
  {
    shmch::SegmentConfig config = Options(name).segment;
    config.create = false;
    shmch::Segment view(config);
    view.page(0)[sizeof(shmch::BlockHeader) + kLargeTestBytes / 2] ^= 0xff;
  }
  shmch::ReceivedBatch batch;
  layer.Receive({{"big", 2}}, batch);
  CHECK_EQ(batch.length_of, (std::vector<uint32_t>{shmch::kDamagedMessage, 5}));
  CHECK_EQ(batch.bytes.size(), size_t{5});  // the damaged payload's bytes left the batch
  CHECK(std::memcmp(batch.bytes.data(), "after", 5) == 0);
  CHECK_EQ(layer.Stats().messages_damaged, 1u);
  CHECK_EQ(layer.Stats().arena_used_bytes, 0u);
  CHECK_CLEAN(layer);
}

// ---------------------------------------------------------------------------------------------

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  int passed = 0, failed = 0;
  for (const TestCase& test : Registry()) {
    if (argc > 1) {
      bool wanted = false;
      for (int i = 1; i < argc; ++i) wanted = wanted || std::strstr(test.name, argv[i]) != nullptr;
      if (!wanted) continue;
    }
    std::string failure;
    try {
      test.fn();
    } catch (const CheckFailure& f) {
      failure = f.message;
    } catch (const Error& e) {
      failure = std::string("unexpected shmch::Error ") + CodeName(e.code()) + ": " + e.what();
    } catch (const std::exception& e) {
      failure = std::string("unexpected exception: ") + e.what();
    } catch (...) {
      failure = "unexpected exception";
    }
    if (test.known_bug) {
      if (failure.empty()) {
        std::printf("FAIL %s: passed although marked as a known bug (%s): remove the marker\n", test.name,
                    test.known_bug);
        ++failed;
      } else {
        std::printf("PASS %s (known bug reproduced: %s; %s)\n", test.name, test.known_bug, failure.c_str());
        ++passed;
      }
    } else if (failure.empty()) {
      std::printf("PASS %s\n", test.name);
      ++passed;
    } else {
      std::printf("FAIL %s: %s\n", test.name, failure.c_str());
      ++failed;
    }
    std::fflush(stdout);
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  // Under ctest, which hides the output of passing tests, the summary also goes to a file that
  // CTestCustom.cmake prints after the run (see native/tests/CMakeLists.txt).
  if (const char* summary = std::getenv("SHMCH_TEST_SUMMARY")) {
    if (FILE* f = std::fopen(summary, "w")) {
      std::fprintf(f, "%d passed, %d failed\n", passed, failed);
      std::fclose(f);
    }
  }
  return failed == 0 ? 0 : 1;
}
