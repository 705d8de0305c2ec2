// libFuzzer target: a hostile process scribbles on a live segment, then the layer is used.
// Every input is a list of writes (offset, bytes) into the segment, applied through a second,
// independent mapping, followed by a sequence of layer operations chosen by the input. The layer
// may throw shmch::Error (a typed refusal); it must never crash, hang, or trip ASan/UBSan.
//
// The lock word is the one thing a writer is trusted not to forge: a forged owner that names a
// live slot is indistinguishable from a real holder (see the README's notes).
//
//   cmake -S . -B build-fuzz -DSHMCH_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++-14
//   cmake --build build-fuzz --target fuzz_segment && build-fuzz/fuzz_segment -max_total_time=60
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "errors.h"
#include "layer.h"
#include "segment.h"

namespace {

struct Harness {
  std::string name = "fuzz-" + std::to_string(getpid());
  shmch::Layer* layer = nullptr;
  uint8_t* raw = nullptr;  // the hostile writer's own mapping
  size_t size = 2u << 20;

  Harness() {
    shmch::LayerOptions options;
    options.segment.name = name;
    options.segment.size = size;
    options.segment.max_channels = 64;
    options.segment.max_groups = 16;
    options.segment.max_members = 128;
    options.segment.max_nodes = 512;
    options.segment.max_message_size = 64 * 1024;
    options.capacity = 50;
    options.client_id = "fuzzclient";
    layer = new shmch::Layer(options);
    int fd = shm_open(shmch::Segment::ObjectName(name).c_str(), O_RDWR, 0);
    raw = static_cast<uint8_t*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    close(fd);
  }
};

Harness& harness() {
  static Harness* h = [] {
    auto* made = new Harness();
    std::atexit([] { shmch::Layer::Destroy(harness().name); });
    return made;
  }();
  return *h;
}

bool InLockWord(size_t offset) {
  size_t lock = offsetof(shmch::Header, lock);
  return offset >= lock && offset < lock + sizeof(shmch::SharedLock);
}

template <typename F>
void Try(F&& f) {
  try {
    f();
  } catch (const shmch::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Harness& h = harness();
  shmch::Layer& layer = *h.layer;
  // A known starting state: empty, then a few queues, groups and messages.
  Try([&] { layer.Flush(); });
  const uint8_t payload[300] = {1, 2, 3};
  Try([&] {
    layer.Send("alpha", payload, 20);
    layer.Send("alpha", payload, 200);
    layer.Send("beta", payload, 300);
    layer.GroupAdd("room", "alpha");
    layer.GroupAdd("room", "specific.fuzzclient!x");
    layer.GroupAdd("room", "specific.fuzzclient!y");
    layer.Send("specific.fuzzclient!y", payload, 30);
    layer.GroupSend("room", payload, 100);
  });

  // The hostile writes: [u32 offset][u8 length][bytes...] repeated, until '!' marks the ops.
  size_t i = 0;
  while (i + 5 <= size && data[i] != '!') {
    uint32_t offset;
    std::memcpy(&offset, data + i, 4);
    size_t length = data[i + 4] % 16 + 1;
    i += 5;
    offset %= static_cast<uint32_t>(h.size);
    for (size_t k = 0; k < length && i < size; ++k, ++i) {
      size_t at = offset + k;
      if (at < h.size && !InLockWord(at)) h.raw[at] = data[i];
    }
  }
  // The operations, one byte each.
  static const char* const kChannels[] = {"alpha", "beta", "gamma", "specific.fuzzclient!x"};
  uint32_t any_set = 0;
  Try([&] { any_set = layer.DefineSet({kChannels[0], kChannels[1], kChannels[2], kChannels[3]}); });
  for (++i; i < size; ++i) {
    uint8_t op = data[i];
    const char* channel = kChannels[op % 4];
    switch ((op >> 2) % 10) {
      case 0: Try([&] { layer.Send(channel, payload, op); }); break;
      case 1: {
        // Our '!' channel's messages wait in our inbox (native/core/inbox.cc): receive that.
        if (channel == kChannels[3]) channel = "specific.fuzzclient!";
        std::vector<shmch::ReceiveRequest> requests{{channel, 1u + op % 3}, {"beta", 1}};
        if (std::string(channel) == "beta") requests.pop_back();
        shmch::ReceivedBatch batch;
        Try([&] { layer.Receive(requests, batch); });
        break;
      }
      case 2: Try([&] { layer.GroupSend("room", payload, op); }); break;
      case 3: Try([&] { layer.GroupAdd("room", channel); }); break;
      case 4: Try([&] { layer.GroupDiscard("room", channel); }); break;
      case 5: Try([&] { layer.Maintain(); }); break;
      case 6: Try([&] { (void)layer.Verify(); }); break;
      case 7: Try([&] { (void)layer.Stats(); (void)layer.ListChannels(100); (void)layer.ListGroups(100); }); break;
      case 8: Try([&] { layer.Flush(); }); break;
      case 9: {
        // receiveAny over the channels whose bits are set in the op's low nibble.
        std::vector<uint32_t> positions;
        for (uint32_t p = 0; p < 4; ++p)
          if (op & (1u << p)) positions.push_back(p);
        shmch::AnyBatch batch;
        Try([&] { layer.ReceiveAny(any_set, positions, 1u + (op >> 6), batch); });
        break;
      }
    }
  }
  return 0;
}
