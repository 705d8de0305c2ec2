// The arena of message blocks and the node pool: allocation, exhaustion, leaks on refusal, and
// what a stream of large messages allocates and faults in.
#include "harness.h"

// ---------------------------------------------------------------------------------------------
// The arena.

// CRC-32C one bit at a time, straight from its definition: the reference the fast paths (three
// interleaved chains joined by table) are checked against.
uint32_t ReferenceCrc32c(const uint8_t* p, size_t n) {
  uint32_t c = ~0u;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
  }
  return ~c;
}

TEST(checksum_is_crc32c_and_copying_computes_the_same) {
  const char* check = "123456789";  // the standard CRC-32C check value
  CHECK_EQ(shmch::Crc32c(reinterpret_cast<const uint8_t*>(check), 9), 0xe3069283u);
  std::vector<uint8_t> source(5'000'011), copy(source.size() + 8);
  uint32_t state = 12345;
  for (uint8_t& byte : source) byte = static_cast<uint8_t>((state = state * 1103515245 + 12345) >> 24);
  // Lengths around the interleaved blocks (3 stripes of 4096 bytes) and a 5 MB message, at odd
  // offsets of source and destination.
  for (size_t length : {size_t{0}, size_t{1}, size_t{31}, size_t{32}, size_t{33}, size_t{12287},
                        size_t{12288}, size_t{12289}, size_t{24576 + 40}, size_t{100003},
                        size_t{5'000'000}}) {
    for (size_t offset : {size_t{0}, size_t{3}}) {
      std::fill(copy.begin(), copy.end(), 0);
      const uint8_t* from = source.data() + offset;
      const uint32_t expected = ReferenceCrc32c(from, length);
      CHECK_EQ(shmch::Crc32c(from, length), expected);
      CHECK_EQ(shmch::CopyWithCrc32c(copy.data() + 5, from, length), expected);
      CHECK(std::equal(from, from + length, copy.begin() + 5));
      CHECK_EQ(copy[4], 0);
      CHECK_EQ(copy[5 + length], 0);  // nothing written past the end
      // In two pieces, the second continuing the first's CRC: the CRC of the whole.
      const size_t half = length / 2;
      const uint32_t first = shmch::CopyWithCrc32c(copy.data(), from, half);
      CHECK_EQ(shmch::CopyWithCrc32c(copy.data() + half, from + half, length - half, first), expected);
    }
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
    std::sort(sorted.begin(), sorted.end(),
              [](const Block& a, const Block& b) { return a.first < b.first; });
    uint64_t pages = 0;
    for (size_t i = 0; i < sorted.size(); ++i) {
      CHECK(sorted[i].first + sorted[i].pages <= page_count);
      if (i + 1 < sorted.size()) CHECK(sorted[i].first + sorted[i].pages <= sorted[i + 1].first);
      for (uint32_t p = sorted[i].first; p < sorted[i].first + sorted[i].pages; ++p)
        CHECK(arena.IsMarked(p));
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
  for (int c = 0; c < 7; ++c)
    received += ReceiveText(layer, "many." + std::to_string(c), 10000).size();
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
// threw for lack of nodes: the exception skipped `if (block != kNil && delivered == 0)
// Free(block)`.
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
