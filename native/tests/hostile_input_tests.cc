// Hostile input: another process scribbling on shared memory, and segments that fail validation.
#include "harness.h"

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

// Flips `field` to `value` for a moment (`spins` compiler barriers), then puts back what it held.
void Flip(uint32_t* field, uint32_t value, int spins = 20) {
  uint32_t saved = __atomic_load_n(field, __ATOMIC_RELAXED);
  __atomic_store_n(field, value, __ATOMIC_RELAXED);
  for (int i = 0; i < spins; ++i) __asm__ __volatile__("" ::: "memory");
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
          if (r & 1)
            Flip(&nodes[n].block, static_cast<uint32_t>((r >> 40) % pages));
          else
            Flip(&nodes[n].next, static_cast<uint32_t>((r >> 40) % (max_nodes + 8)));
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

// Inboxes (native/core/inbox.cc): an inbox node's target and a fan's member list are indices a
// receive and a group send follow. A thread flips them (and fans' counts) to wild values and back
// while this one sends to '!' channels, group-sends, receives its inbox and verifies: typed errors
// at most, never a crash, and a flush leaves a consistent segment.
TEST(concurrent_scribbler_on_inbox_targets_and_fans_never_crashes) {
  TempName name;
  std::string how = RunChild([&] {
    LayerOptions options = Options(name);
    options.client_id = "me1";
    options.capacity = 1000;
    Layer layer(options);
    for (int i = 0; i < 8; ++i) layer.GroupAdd("room", "in.me1!" + std::to_string(i));
    layer.GroupAdd("room", "plain");
    ForeignMapping map(name);
    shmch::Header& h = map.header();
    auto* nodes = reinterpret_cast<shmch::Node*>(map.base + h.nodes_offset);
    auto* members = reinterpret_cast<shmch::Member*>(map.base + h.members_offset);
    const uint32_t max_nodes = h.max_nodes, max_members = h.max_members;
    std::atomic<bool> stop{false};
    std::thread scribbler([&] {
      uint64_t x = 0x2545f4914f6cdd1dull;
      while (!stop.load(std::memory_order_relaxed)) {
        uint64_t r = NextRandom(x);
        const uint32_t wild = static_cast<uint32_t>(r >> 32);
        if (r & 1) {
          uint32_t n = static_cast<uint32_t>((r >> 8) % 64 % max_nodes);
          Flip(&nodes[n].target, (r & 2) ? wild : (wild | shmch::kGroupTarget), 5000);
        } else {
          uint32_t m = static_cast<uint32_t>((r >> 8) % 32 % max_members);
          switch ((r >> 4) % 4) {
            case 0: Flip(&members[m].next_peer, wild % (max_members + 8), 5000); break;
            case 1: Flip(&members[m].fan, wild % (max_members + 8), 5000); break;
            case 2: Flip(&members[m].peer_count, wild, 5000); break;
            default: Flip(&members[m].live_peers, wild, 5000); break;
          }
        }
      }
    });
    struct JoinScribbler {
      std::atomic<bool>& stop;
      std::thread& thread;
      ~JoinScribbler() {
        stop = true;
        if (thread.joinable()) thread.join();
      }
    } join_scribbler{stop, scribbler};
    const uint8_t payload[64] = {7};
    uint64_t deadline = shmch::MonotonicMs() + 2000;
    uint32_t round = 0, failures = 0;
    while (shmch::MonotonicMs() < deadline) {
      ++round;
      try {
        layer.Send("in.me1!" + std::to_string(round % 8), payload, 40);
        layer.GroupSend("room", payload, 64);
      } catch (const Error&) {
        ++failures;
      }
      try {
        shmch::ReceivedBatch batch;
        layer.Receive({{"in.me1!", 4}, {"plain", 4}}, batch);
      } catch (const Error&) {
        ++failures;
      }
      if (round % 16 == 0) {
        try {
          layer.Verify();
          layer.GroupMembers("room");
        } catch (const Error&) {
          ++failures;
        }
      }
    }
    stop = true;
    scribbler.join();
    layer.Flush();
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
      if (ReceiveText(victim, "v", 1) != std::vector<std::string>{"m" + std::to_string(rounds)})
        _exit(6);
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
