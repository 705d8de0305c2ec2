// Node-API binding: a thin wrapper over shmch::Layer. The layer's doorbell FIFO is polled by this
// thread's own libuv loop (uv_poll_t), so a ring is one wake-up of the JS thread and one JS
// callback per wake (never one per message); no waiter thread, no cross-thread hop.
#include <fcntl.h>
#include <napi.h>
#include <sys/mman.h>
#include <unistd.h>
#include <uv.h>

#include <cstddef>
#include <cstring>
#include <memory>
#include <string>

#include "../core/errors.h"
#include "../core/fault_points.h"
#include "../core/layer.h"

namespace {

using shmch::Error;

// How long the constructor waits for a live holder of the segment lock, unless told (ms).
constexpr uint64_t kDefaultLockTimeoutMs = 5000;

[[noreturn]] void ThrowJs(Napi::Env env, const Error& e) {
  Napi::Error error = Napi::Error::New(env, e.what());
  error.Set("code", Napi::String::New(env, shmch::ErrorCodeName(e.code())));
  if (e.code() == shmch::ErrorCode::kBusy) error.Set("pid", Napi::Number::New(env, e.holder_pid()));
  throw error;
}

template <typename F>
auto Guard(Napi::Env env, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    ThrowJs(env, e);
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(env, "out of memory in shm-channels native code");
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    // Anything else the standard library throws (system_error, length_error...) becomes a JS
    // error too: an exception leaving a Node-API callback would terminate the process.
    throw Napi::Error::New(env, std::string("shm-channels native code failed: ") + e.what());
  }
}

uint32_t OptionalUint32(const Napi::Object& o, const char* key, uint32_t fallback) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : fallback;
}

uint64_t OptionalUint64(const Napi::Object& o, const char* key, uint64_t fallback) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? static_cast<uint64_t>(v.As<Napi::Number>().DoubleValue()) : fallback;
}

// A typed array's bytes, from one Node-API call (a receive or send makes a few per call: each
// costs, and IsTypedArray + As<> + ByteLength() + Data() were four). False if `v` is none.
bool TypedArrayBytes(napi_env env, napi_value v, uint8_t*& data, size_t& bytes) {
  napi_typedarray_type type;
  size_t elements = 0;
  void* at = nullptr;
  if (napi_get_typedarray_info(env, v, &type, &elements, &at, nullptr, nullptr) != napi_ok) {
    return false;
  }
  size_t element_bytes = 1;
  switch (type) {
    case napi_int8_array:
    case napi_uint8_array:
    case napi_uint8_clamped_array: element_bytes = 1; break;
    case napi_int16_array:
    case napi_uint16_array: element_bytes = 2; break;
    case napi_int32_array:
    case napi_uint32_array:
    case napi_float32_array: element_bytes = 4; break;
    default: element_bytes = 8; break;  // float64, bigint64, biguint64
  }
  data = static_cast<uint8_t*>(at);
  bytes = elements * element_bytes;
  return true;
}

std::pair<const uint8_t*, uint32_t> BytesOf(const Napi::Value& v) {
  uint8_t* data = nullptr;
  size_t bytes = 0;
  if (!TypedArrayBytes(v.Env(), v, data, bytes)) {
    throw Napi::TypeError::New(v.Env(), "payload must be a Uint8Array");
  }
  // Lengths are 32-bit in the core: a larger payload must not be cut to its low 32 bits (which
  // could pass the maxMessageSize check and send a prefix).
  if (bytes >= (size_t{1} << 32)) {
    Napi::Error error = Napi::RangeError::New(
        v.Env(),
        "payload of " + std::to_string(bytes) +
            " bytes is larger than any message can be (4 GiB); keep it under maxMessageSize");
    error.Set("code", Napi::String::New(v.Env(), "ETOOLARGE"));
    throw error;
  }
  return {data, static_cast<uint32_t>(bytes)};
}

// A receive's result, payloads and trailer, handed to JS. One that fits the caller's scratch
// buffer (`scratch`, a Uint8Array or undefined) goes there and its length is returned: one
// long-lived buffer instead of a fresh ArrayBuffer per batch, whose allocation and collection
// cost more than the copy. Otherwise a copy in a Node Buffer (Node's allocator, which V8 counts
// and collects): the batch's vector stays this object's and warm for the next call. Handing the
// vector itself over as an external buffer, uncounted by V8, left every such batch in fresh
// pages, freed only at some later full collection (200 KB batches of small messages: the
// process grew by each of them). A batch with large payloads never gets here: a BufferRoom
// takes those payloads straight from the segment.
Napi::Value HandOver(Napi::Env env, shmch::PayloadBytes& bytes, const Napi::Value& scratch) {
  uint8_t* into = nullptr;
  size_t room = 0;
  if (!scratch.IsEmpty() && TypedArrayBytes(env, scratch, into, room) && bytes.size() <= room) {
    std::memcpy(into, bytes.data(), bytes.size());
    return Napi::Number::New(env, static_cast<double>(bytes.size()));
  }
  return Napi::Buffer<uint8_t>::Copy(env, bytes.data(), bytes.size());
}

// Bytes a batch's trailer takes after its payloads (the format: lib/shm/boundary.ts).
size_t TrailerBytes(const shmch::ReceivedBatch& batch) {
  return batch.request_of.size() * 16 + batch.targets.size() * 4 + batch.target_names.size() +
         batch.emptied.size() * 4 + 20;
}
size_t TrailerBytes(const shmch::AnyBatch& batch) {
  return batch.position_of.size() * 8 + batch.still_ready.size() * 4 + 12;
}

void WriteTrailer(uint8_t* at, const shmch::ReceivedBatch& batch) {
  const size_t n = batch.request_of.size();
  for (size_t i = 0; i < n; ++i) {
    std::memcpy(at + i * 16, &batch.request_of[i], 4);
    std::memcpy(at + i * 16 + 4, &batch.length_of[i], 4);
    std::memcpy(at + i * 16 + 8, &batch.expires_in_ms[i], 4);
    std::memcpy(at + i * 16 + 12, &batch.target_count_of[i], 4);
  }
  at += n * 16;
  const size_t targets = batch.targets.size(), names = batch.target_names.size();
  if (targets) std::memcpy(at, batch.targets.data(), targets * 4);
  at += targets * 4;
  if (names) std::memcpy(at, batch.target_names.data(), names);
  at += names;
  const size_t emptied = batch.emptied.size();
  if (emptied) std::memcpy(at, batch.emptied.data(), emptied * 4);
  at += emptied * 4;
  const uint32_t counts[5] = {static_cast<uint32_t>(n), static_cast<uint32_t>(targets),
                              batch.target_name_count, static_cast<uint32_t>(names),
                              static_cast<uint32_t>(emptied)};
  std::memcpy(at, counts, 20);
}

void WriteTrailer(uint8_t* at, const shmch::AnyBatch& batch) {
  const size_t n = batch.position_of.size(), ready = batch.still_ready.size();
  for (size_t i = 0; i < n; ++i) {
    std::memcpy(at + i * 8, &batch.position_of[i], 4);
    std::memcpy(at + i * 8 + 4, &batch.length_of[i], 4);
  }
  std::memcpy(at + n * 8, batch.still_ready.data(), ready * 4);
  const uint32_t counts[3] = {static_cast<uint32_t>(n), static_cast<uint32_t>(ready), batch.held};
  std::memcpy(at + n * 8 + ready * 4, counts, 12);
}

// A batch whose large payloads are copied outside the lock goes straight into a Node Buffer
// (napi_create_buffer: uninitialized memory from Node's allocator, which V8 accounts for). Its
// collector then frees the buffers as the receiver drops them, and malloc hands the same warm
// pages out again: one copy, into warm memory. The core's vector handed over as an external
// buffer was fresh pages per message (1,220 page faults per 5 MB), freed only long after (the
// receiver's RSS grew by 5 MB per message between full collections).
template <typename BatchOf>
class BufferRoom final : public shmch::PayloadRoom {
 public:
  BufferRoom(Napi::Env env, BatchOf& batch) : env_(env), batch_(batch) { batch.placed = {this}; }

  // Called by the core once the batch's messages are known (their trailer's size with them).
  uint8_t* Room(size_t size) noexcept override {
    void* data = nullptr;
    napi_value value = nullptr;
    capacity_ = size + TrailerBytes(batch_);
    if (napi_create_buffer(env_, capacity_, &data, &value) != napi_ok) {
      napi_value ignored;
      napi_get_and_clear_last_exception(env_, &ignored);  // the core's own bytes serve instead
      return nullptr;
    }
    buffer_ = value;
    return static_cast<uint8_t*>(data);
  }

  // The placed batch with its trailer: the Buffer, or, when a damaged payload left part of it
  // unused, a copy of exactly the payloads and trailer (the reader finds the trailer at the end).
  Napi::Value Result() const {
    const shmch::PayloadPlacement& placed = batch_.placed;
    const size_t trailer = TrailerBytes(batch_);
    WriteTrailer(placed.at + placed.size, batch_);
    if (placed.size + trailer == capacity_) return Napi::Value(env_, buffer_);
    return Napi::Buffer<uint8_t>::Copy(env_, placed.at, placed.size + trailer);
  }

 private:
  napi_env env_;
  BatchOf& batch_;
  napi_value buffer_ = nullptr;
  size_t capacity_ = 0;
};

// The optional limit of a listing call (channels, groups): 1000 when not given.
uint32_t ListLimit(const Napi::CallbackInfo& info) {
  return info[0].IsNumber() ? info[0].As<Napi::Number>().Uint32Value() : 1000;
}

// One JS object per listed record, its fields set by `describe`.
template <typename Info, typename Describe>
Napi::Array ObjectsOf(Napi::Env env, const std::vector<Info>& list, Describe describe) {
  Napi::Array out = Napi::Array::New(env, list.size());
  for (uint32_t i = 0; i < list.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    describe(o, list[i]);
    out.Set(i, o);
  }
  return out;
}

class NativeLayer : public Napi::ObjectWrap<NativeLayer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeLayer",
                       {
                           InstanceMethod<&NativeLayer::RefusesAsFull>("refusesAsFull"),
                           InstanceMethod<&NativeLayer::GroupSend>("groupSend"),
                           InstanceMethod<&NativeLayer::DefineSet>("defineSet"),
                           InstanceMethod<&NativeLayer::ForgetSet>("forgetSet"),
                           InstanceMethod<&NativeLayer::GroupAdd>("groupAdd"),
                           InstanceMethod<&NativeLayer::GroupDiscard>("groupDiscard"),
                           InstanceMethod<&NativeLayer::GroupMembers>("groupMembers"),
                           InstanceMethod<&NativeLayer::Flush>("flush"),
                           InstanceMethod<&NativeLayer::ReleaseChannel>("releaseChannel"),
                           InstanceMethod<&NativeLayer::CountBufferDrops>("countBufferDrops"),
                           InstanceMethod<&NativeLayer::Maintain>("maintain"),
                           InstanceMethod<&NativeLayer::Ready>("ready"),
                           InstanceMethod<&NativeLayer::Unwait>("unwait"),
                           InstanceMethod<&NativeLayer::SetWaiting>("setWaiting"),
                           InstanceMethod<&NativeLayer::Arm>("arm"),
                           InstanceMethod<&NativeLayer::BellRung>("bellRung"),
                           InstanceMethod<&NativeLayer::BellView>("bellView"),
                           InstanceMethod<&NativeLayer::Stats>("stats"),
                           InstanceMethod<&NativeLayer::LockHoldStats>("lockHoldStats"),
                           InstanceMethod<&NativeLayer::Config>("config"),
                           InstanceMethod<&NativeLayer::Channels>("channels"),
                           InstanceMethod<&NativeLayer::Groups>("groups"),
                           InstanceMethod<&NativeLayer::Verify>("verify"),
                           InstanceMethod<&NativeLayer::IsUnlinked>("isUnlinked"),
                           InstanceMethod<&NativeLayer::Prune>("prune"),
                           InstanceMethod<&NativeLayer::Close>("close"),
                           InstanceAccessor<&NativeLayer::Slot>("slot"),
                           StaticMethod<&NativeLayer::Destroy>("destroy"),
                           StaticMethod<&NativeLayer::AttachedProcesses>("attachedProcesses"),
                           StaticMethod<&NativeLayer::PeekQueued>("peekQueued"),
                       });
  }

  NativeLayer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeLayer>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject() || !info[1].IsFunction()) {
      throw Napi::TypeError::New(env, "NativeLayer(options, onWake)");
    }
    Napi::Object o = info[0].As<Napi::Object>();
    shmch::LayerOptions options;
    options.segment.name = o.Get("name").ToString().Utf8Value();
    options.segment.size = OptionalUint64(o, "size", options.segment.size);
    options.segment.max_channels = OptionalUint32(o, "maxChannels", options.segment.max_channels);
    options.segment.max_groups = OptionalUint32(o, "maxGroups", options.segment.max_groups);
    options.segment.max_members = OptionalUint32(o, "maxMembers", options.segment.max_members);
    options.segment.max_nodes = OptionalUint32(o, "maxNodes", options.segment.max_nodes);
    options.segment.max_message_size =
        OptionalUint32(o, "maxMessageSize", options.segment.max_message_size);
    options.segment.mode = OptionalUint32(o, "mode", options.segment.mode);
    options.segment.allow_foreign = o.Get("allowForeign").ToBoolean().Value();
    Napi::Value create = o.Get("create");
    options.segment.create = create.IsUndefined() || create.ToBoolean().Value();
    options.capacity = OptionalUint32(o, "capacity", options.capacity);
    options.expiry_ms = OptionalUint64(o, "expiryMs", options.expiry_ms);
    options.group_expiry_ms = OptionalUint64(o, "groupExpiryMs", options.group_expiry_ms);
    if (o.Get("clientId").IsString()) options.client_id = o.Get("clientId").ToString().Utf8Value();
    Napi::Value patterns = o.Get("channelCapacity");
    if (patterns.IsArray()) {
      auto list = patterns.As<Napi::Array>();
      for (uint32_t i = 0; i < list.Length(); ++i) {
        auto pair = list.Get(i).As<Napi::Array>();
        options.channel_capacity.emplace_back(pair.Get(0u).ToString().Utf8Value(),
                                              pair.Get(1u).As<Napi::Number>().Uint32Value());
      }
    }
    // The constructor is synchronous: it may wait for a live lock holder up to lockTimeoutMs.
    // Every later call waits only one short slice and throws EBUSY after it, so that JS can retry
    // from the event loop instead of freezing it behind a stopped process (lib/shm/shm-layer.ts).
    lock_timeout_ns_ = OptionalUint64(o, "lockTimeoutMs", kDefaultLockTimeoutMs) * 1'000'000;
    lock_slice_ns_ = OptionalUint64(o, "lockSliceMicros", 1000) * 1000;
    options.lock_wait_ns = lock_timeout_ns_;
    layer_ = Guard(env, [&] { return std::make_unique<shmch::Layer>(options); });
    layer_->SetLockWait(lock_slice_ns_);
    wake_ = Napi::Persistent(info[1].As<Napi::Function>());
    wake_context_ = std::make_unique<Napi::AsyncContext>(env, "shm-channels wake");
    StartDoorbell(env);
    // Last: once these exist they may outlive a failed construction.
    Napi::Object self = info.This().As<Napi::Object>();
    DefineDirect<&NativeLayer::Send>(env, self, "send");
    DefineDirect<&NativeLayer::Receive>(env, self, "receive");
    DefineDirect<&NativeLayer::ReceiveAny>(env, self, "receiveAny");
  }

  ~NativeLayer() override {
    if (direct_) direct_->layer = nullptr;
    Shutdown();
  }

 private:
  // Lives until libuv has closed the poll handle, which may be after this object is gone.
  struct Doorbell {
    uv_poll_t poll;
    int fd = -1;  // our own duplicate of the layer's FIFO: libuv may poll it until the close
    NativeLayer* owner = nullptr;
    napi_async_cleanup_hook_handle teardown_hook = nullptr;
  };

  void StartDoorbell(Napi::Env env) {
    uv_loop_t* loop = nullptr;
    auto doorbell = std::make_unique<Doorbell>();
    doorbell->fd = fcntl(layer_->doorbell_fd(), F_DUPFD_CLOEXEC, 0);
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr || doorbell->fd < 0 ||
        uv_poll_init(loop, &doorbell->poll, doorbell->fd) != 0) {
      if (doorbell->fd >= 0) close(doorbell->fd);
      layer_->Close();
      throw Napi::Error::New(env,
                             "shm-channels: cannot poll the layer's doorbell on the event loop");
    }
    doorbell->poll.data = doorbell.get();
    doorbell->owner = this;
    uv_poll_start(&doorbell->poll, UV_READABLE, &NativeLayer::OnDoorbell);
    // Only pending receives keep the process alive (SetWaiting).
    uv_unref(reinterpret_cast<uv_handle_t*>(&doorbell->poll));
    // A worker's environment waits for this hook to finish (the handle closed) before it tears
    // its loop down; a plain cleanup hook could leave the handle open on a closed loop.
    napi_add_async_cleanup_hook(env, &NativeLayer::OnEnvTeardown, doorbell.get(),
                                &doorbell->teardown_hook);
    doorbell_ = doorbell.release();
  }

  static void OnDoorbell(uv_poll_t* handle, int status, int /*events*/) {
    auto* doorbell = static_cast<Doorbell*>(handle->data);
    if (status < 0 || doorbell->owner == nullptr) return;
    doorbell->owner->Woken();
  }

  void Woken() {
    if (shut_down_) return;
    layer_->Disarm();
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    try {
      // MakeCallback: runs the microtasks the callback queued (its promise resolutions) at once.
      wake_.MakeCallback(env.Global(), {}, *wake_context_);
    } catch (const Napi::Error& e) {
      // Not ours to swallow: surface it as an uncaught exception of the process.
      napi_fatal_exception(env, e.Value());
    }
  }

  static void OnEnvTeardown(napi_async_cleanup_hook_handle, void* data) {
    auto* doorbell = static_cast<Doorbell*>(data);
    // With an owner: close everything now (the handle's close callback removes this hook).
    // Without one the handle is being closed already and its callback removes the hook.
    if (doorbell->owner) doorbell->owner->Shutdown();
  }

  static void OnDoorbellClosed(uv_handle_t* handle) {
    auto* doorbell = static_cast<Doorbell*>(handle->data);
    if (doorbell->fd >= 0) close(doorbell->fd);
    if (doorbell->teardown_hook) napi_remove_async_cleanup_hook(doorbell->teardown_hook);
    delete doorbell;
  }

  void StopDoorbell() {
    if (!doorbell_) return;
    doorbell_->owner = nullptr;
    uv_poll_stop(&doorbell_->poll);
    uv_close(reinterpret_cast<uv_handle_t*>(&doorbell_->poll), &NativeLayer::OnDoorbellClosed);
    doorbell_ = nullptr;
  }

  // send(), receive() and receiveAny(), the calls of every message, are functions of each instance
  // that carry the instance as their data: a prototype method finds its instance by napi_unwrap, a
  // private-symbol property lookup on the runtime's slow path (perf: about 30 ns of each call's
  // ~390). The functions share `direct_` with the instance, which clears it when collected, so
  // one kept apart from its layer throws instead of reaching freed memory.
  struct DirectTarget {
    NativeLayer* layer;
  };

  template <Napi::Value (NativeLayer::*Method)(const Napi::CallbackInfo&)>
  static napi_value Direct(napi_env env, napi_callback_info cbinfo) {
    try {
      Napi::CallbackInfo info(env, cbinfo);
      NativeLayer* layer = static_cast<DirectTarget*>(info.Data())->layer;
      if (layer == nullptr) throw Napi::Error::New(env, "the layer is closed");
      return (layer->*Method)(info);
    } catch (const Napi::Error& e) {
      e.ThrowAsJavaScriptException();
      return nullptr;
    } catch (const std::exception& e) {
      napi_throw_error(env, nullptr, (std::string("shm-channels native code failed: ") + e.what()).c_str());
      return nullptr;
    }
  }

  template <Napi::Value (NativeLayer::*Method)(const Napi::CallbackInfo&)>
  void DefineDirect(Napi::Env env, Napi::Object self, const char* name) {
    if (!direct_) direct_ = std::make_shared<DirectTarget>(DirectTarget{this});
    auto keep = std::make_unique<std::shared_ptr<DirectTarget>>(direct_);
    napi_value fn = nullptr;
    NAPI_THROW_IF_FAILED_VOID(
        env, napi_create_function(env, name, NAPI_AUTO_LENGTH, &Direct<Method>, keep->get(), &fn));
    NAPI_THROW_IF_FAILED_VOID(
        env, napi_add_finalizer(
                 env, fn, keep.get(),
                 [](napi_env, void* data, void*) {
                   delete static_cast<std::shared_ptr<DirectTarget>*>(data);
                 },
                 nullptr, nullptr));
    keep.release();  // the finalizer owns it now
    napi_property_descriptor property = {name,    nullptr, nullptr,      nullptr,
                                         nullptr, fn,      napi_default, nullptr};
    NAPI_THROW_IF_FAILED_VOID(env, napi_define_properties(env, self, 1, &property));
  }

  // Stops polling the doorbell and releases the slot. Safe to call more than once, from close(),
  // the environment's teardown (worker exit) or the destructor (a layer collected unclosed).
  void Shutdown() {
    if (shut_down_) return;
    shut_down_ = true;
    StopDoorbell();
    if (layer_) {
      try {
        layer_->Close();
      } catch (...) {
      }
    }
  }

  shmch::Layer& Open(Napi::Env env) {
    if (shut_down_) throw Napi::Error::New(env, "the layer is closed");
    return *layer_;
  }

  // For the synchronous inspection calls (stats, verify...), which JS cannot retry: they wait up
  // to lockTimeoutMs for a live holder.
  template <typename F>
  auto WithLockTimeout(F&& f) -> decltype(f()) {
    struct Restore {
      shmch::Layer& layer;
      uint64_t slice;
      ~Restore() { layer.SetLockWait(slice); }
    } restore{*layer_, lock_slice_ns_};
    layer_->SetLockWait(lock_timeout_ns_);
    return f();
  }

  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string& channel = send_channel_;
    ReadName(env, info[0], channel);
    // The payload: bytes [start, end) of one Uint8Array (looked at first: the common case), or
    // an array of them sent as their concatenation (the serializer's bytes around large binary
    // values it left uncopied).
    std::vector<shmch::PayloadPiece>& pieces = send_pieces_;
    pieces.clear();
    uint8_t* whole = nullptr;
    size_t whole_bytes = 0;
    if (TypedArrayBytes(env, info[1], whole, whole_bytes) && whole_bytes < (size_t{1} << 32)) {
      uint32_t start = 0, end = static_cast<uint32_t>(whole_bytes);
      // Without a start (not a number): the whole array.
      if (napi_get_value_uint32(env, info[2], &start) == napi_ok &&
          (napi_get_value_uint32(env, info[3], &end) != napi_ok || start > end ||
           end > whole_bytes)) {
        throw Napi::TypeError::New(env, "send: start and end must be a range of the payload's bytes");
      }
      pieces.push_back({whole + start, end - start});
    } else if (info[1].IsArray()) {
      auto list = info[1].As<Napi::Array>();
      for (uint32_t i = 0; i < list.Length(); ++i) {
        auto [data, length] = BytesOf(list.Get(i));
        pieces.push_back({data, length});
      }
    } else {
      auto [data, length] = BytesOf(info[1]);  // throws the error that says what is wrong
      pieces.push_back({data, length});
    }
    // true: queued; false: dropped for a gone '!' channel's instance; a number: the channel is
    // full (its capacity), nothing was queued. Returned, not thrown: a retry loop meets this on
    // every turn, and JS builds the one ChannelFull it throws.
    uint32_t capacity = 0;
    shmch::SendOutcome outcome = Guard(env, [&] {
      return Open(env).TrySendPieces(channel, pieces.data(), static_cast<uint32_t>(pieces.size()),
                                     capacity);
    });
    if (outcome == shmch::SendOutcome::kFull) return Napi::Number::New(env, capacity);
    return Napi::Boolean::New(env, outcome == shmch::SendOutcome::kQueued);
  }

  // refusesAsFull(channel): the channel's capacity when a send to it would be refused as full
  // now, else false (nothing is sent).
  Napi::Value RefusesAsFull(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string channel = info[0].ToString().Utf8Value();
    uint32_t capacity = 0;
    bool full = Guard(env, [&] { return Open(env).RefusesAsFull(channel, capacity); });
    if (full) return Napi::Number::New(env, capacity);
    return Napi::Boolean::New(env, false);
  }

  Napi::Value GroupSend(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string group = info[0].ToString().Utf8Value();
    auto [data, length] = BytesOf(info[1]);
    uint32_t n = Guard(env, [&] { return Open(env).GroupSend(group, data, length); });
    return Napi::Number::New(env, n);
  }

  // receive(channel: string, wanted: number) or receive(channels: string[], wanted: number[]).
  // Returns null, or one batch of every message taken (its format is described once, where it
  // is read: lib/shm/boundary.ts). One JS object per batch keeps the hot path's per-call cost low.
  // A third argument `true`: the channels are every channel this instance waits on, so the same
  // call also answers the doorbell (consumes the bell and the ready list): one lock per wake-up.
  // A fourth, a Uint8Array: scratch space for the result (then its length is returned instead).
  // A fifth and sixth: per request (a number, or an array like `wanted`) how many messages more
  // than `wanted` it may take, and how many payload bytes those extra messages may take in all.
  Napi::Value Receive(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bool covers_all = info.Length() > 2 && Flag(env, info[2]);
    const bool has_extra = info.Length() > 5 && !info[4].IsUndefined();
    uint64_t extra_bytes = 0;
    if (has_extra) {
      double budget = info[5].As<Napi::Number>().DoubleValue();
      extra_bytes = budget > 0 ? static_cast<uint64_t>(budget) : 0;
    }
    // The request list and the batch are this object's, reused: a receive of one message then
    // allocates nothing (the hot path of a receive loop). Nothing in here calls back into JS.
    std::vector<shmch::ReceiveRequest>& requests = receive_requests_;
    requests.resize(1);
    if (TryReadString(env, info[0], requests[0].channel)) {
      requests[0].wanted = info[1].As<Napi::Number>().Uint32Value();
      requests[0].extra = has_extra ? info[4].As<Napi::Number>().Uint32Value() : 0;
    } else {
      requests.clear();
      auto channels = info[0].As<Napi::Array>();
      auto wanted = info[1].As<Napi::Array>();
      Napi::Array extra = has_extra ? info[4].As<Napi::Array>() : Napi::Array();
      requests.reserve(channels.Length());
      for (uint32_t i = 0; i < channels.Length(); ++i) {
        requests.push_back({channels.Get(i).ToString().Utf8Value(),
                            wanted.Get(i).As<Napi::Number>().Uint32Value(),
                            has_extra ? extra.Get(i).As<Napi::Number>().Uint32Value() : 0});
      }
    }
    shmch::ReceivedBatch& batch = receive_batch_;
    batch.Clear();
    BufferRoom<shmch::ReceivedBatch> room(env, batch);
    Guard(env, [&] { Open(env).Receive(requests, batch, covers_all, extra_bytes); });
    if (batch.request_of.empty()) return env.Null();
    if (batch.placed.at) return room.Result();
    auto& bytes = batch.bytes;
    size_t payload = bytes.size();
    bytes.resize(payload + TrailerBytes(batch));
    WriteTrailer(bytes.data() + payload, batch);
    return HandOver(env, bytes, info[3]);
  }

  // defineSet(channels: string[]): the id receiveAny() names the set by.
  Napi::Value DefineSet(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsArray())
      throw Napi::TypeError::New(env, "defineSet takes an array of channel names");
    auto list = info[0].As<Napi::Array>();
    std::vector<std::string> channels;
    channels.reserve(list.Length());
    for (uint32_t i = 0; i < list.Length(); ++i) {
      Napi::Value name = list.Get(i);
      if (!name.IsString()) throw Napi::TypeError::New(env, "channel names must be strings");
      channels.push_back(name.As<Napi::String>().Utf8Value());
    }
    uint32_t id = Guard(env, [&] { return Open(env).DefineSet(channels); });
    return Napi::Number::New(env, id);
  }

  Napi::Value ForgetSet(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsNumber()) throw Napi::TypeError::New(env, "forgetSet takes a set id");
    Guard(env, [&] { Open(env).ForgetSet(info[0].As<Napi::Number>().Uint32Value()); });
    return env.Undefined();
  }

  // receiveAny(set: number, positions: number[], wanted: number, answerBell?: boolean,
  // onOtherReady?: (names: string[] | null) => void, scratch?: Uint8Array). Returns null, the
  // length of the batch written into `scratch` when it fits, or the batch in a Buffer (the
  // format is described once, where it is read: lib/shm/boundary.ts).
  Napi::Value ReceiveAny(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    // One Node-API call per argument (each costs; a receiveAny() loop makes this call per
    // message): the reads fail for a value of the wrong type.
    uint32_t set = 0, wanted = 0, count = 0;
    if (napi_get_value_uint32(env, info[0], &set) != napi_ok ||
        napi_get_array_length(env, info[1], &count) != napi_ok ||
        napi_get_value_uint32(env, info[2], &wanted) != napi_ok) {
      throw Napi::TypeError::New(env,
                                 "receiveAny(set: number, positions: number[], wanted: number)");
    }
    // The position list and the batch are this object's, reused (as receive()'s): a call that
    // takes one message allocates nothing. JS runs (onOtherReady) only once the result is built.
    std::vector<uint32_t>& positions = any_positions_;
    positions.clear();
    for (uint32_t i = 0; i < count; ++i) {
      napi_value position = nullptr;
      uint32_t at = 0;
      if (napi_get_element(env, info[1], i, &position) != napi_ok ||
          napi_get_value_uint32(env, position, &at) != napi_ok) {
        throw Napi::TypeError::New(env, "positions must be numbers");
      }
      positions.push_back(at);
    }
    bool answer_bell = info.Length() > 3 && Flag(env, info[3]);
    shmch::AnyBatch& batch = any_batch_;
    batch.bytes.clear();
    batch.position_of.clear();
    batch.length_of.clear();
    batch.still_ready.clear();
    batch.held = 0;
    batch.other_ready.clear();
    batch.ready_overflow = false;
    BufferRoom<shmch::AnyBatch> room(env, batch);
    Guard(env, [&] { Open(env).ReceiveAny(set, positions, wanted, batch, answer_bell); });
    // What rang for other receives goes to `onOtherReady` (names, or null: look at all).
    Napi::Value report;
    bool tell = answer_bell && (batch.ready_overflow || !batch.other_ready.empty()) &&
                info.Length() > 4 && info[4].IsFunction();
    if (tell) {
      report = env.Null();
      if (!batch.ready_overflow) {
        Napi::Array names = Napi::Array::New(env, batch.other_ready.size());
        for (uint32_t i = 0; i < batch.other_ready.size(); ++i) names.Set(i, batch.other_ready[i]);
        report = names;
      }
    }
    Napi::Value result = batch.placed.at ? room.Result() : AnyResult(env, info, batch);
    if (tell) info[4].As<Napi::Function>().Call({report});
    return result;
  }

  // receiveAny()'s result: null, the length written into the scratch buffer (info[5]), or a Buffer.
  static Napi::Value AnyResult(Napi::Env env, const Napi::CallbackInfo& info,
                               shmch::AnyBatch& batch) {
    size_t n = batch.position_of.size(), ready = batch.still_ready.size();
    if (n == 0 && ready == 0 && batch.held == 0) return env.Null();
    auto& bytes = batch.bytes;
    size_t payload = bytes.size();
    bytes.resize(payload + TrailerBytes(batch));
    WriteTrailer(bytes.data() + payload, batch);
    return HandOver(env, bytes, info[5]);
  }

  Napi::Value GroupAdd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string group = info[0].ToString().Utf8Value();
    std::string channel = info[1].ToString().Utf8Value();
    Guard(env, [&] { Open(env).GroupAdd(group, channel); });
    return env.Undefined();
  }

  Napi::Value GroupDiscard(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string group = info[0].ToString().Utf8Value();
    std::string channel = info[1].ToString().Utf8Value();
    Guard(env, [&] { Open(env).GroupDiscard(group, channel); });
    return env.Undefined();
  }

  Napi::Value GroupMembers(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string group = info[0].ToString().Utf8Value();
    auto names = Guard(env, [&] { return Open(env).GroupMembers(group); });
    Napi::Array out = Napi::Array::New(env, names.size());
    for (uint32_t i = 0; i < names.size(); ++i) out.Set(i, names[i]);
    return out;
  }

  Napi::Value Flush(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Guard(env, [&] { Open(env).Flush(); });
    return env.Undefined();
  }

  Napi::Value ReleaseChannel(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string channel = info[0].ToString().Utf8Value();
    uint32_t dropped = Guard(env, [&] { return Open(env).ReleaseChannel(channel); });
    return Napi::Number::New(env, dropped);
  }

  // countBufferDrops(expired: number, orphaned: number, skippedFull?: number): buffered messages
  // dropped unreceived (skippedFull: given way to newer ones in a full buffer).
  Napi::Value CountBufferDrops(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto count = [&](size_t i) {
      if (info.Length() <= i || !info[i].IsNumber()) return uint64_t{0};
      double n = info[i].As<Napi::Number>().DoubleValue();
      return n > 0 ? static_cast<uint64_t>(n) : uint64_t{0};
    };
    uint64_t expired = count(0), orphaned = count(1), skipped_full = count(2);
    Guard(env, [&] { Open(env).CountBufferDrops(expired, orphaned, skipped_full); });
    return env.Undefined();
  }

  // ready(): names of the channels that rang us since the last call, or null for "look at all".
  Napi::Value Ready(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<std::string> names;
    bool complete = Guard(env, [&] { return Open(env).TakeReady(names); });
    if (!complete) return env.Null();
    Napi::Array out = Napi::Array::New(env, names.size());
    for (uint32_t i = 0; i < names.size(); ++i) out.Set(i, names[i]);
    return out;
  }

  Napi::Value Unwait(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto list = info[0].As<Napi::Array>();
    std::vector<std::string> channels;
    for (uint32_t i = 0; i < list.Length(); ++i)
      channels.push_back(list.Get(i).ToString().Utf8Value());
    Guard(env, [&] { Open(env).Unwait(channels); });
    return env.Undefined();
  }

  Napi::Value Maintain(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    // maintain(stillWaiting?: string[]): the channels this instance's receives wait on.
    std::vector<std::string> waiting;
    bool has_list = info[0].IsArray();
    if (has_list) {
      auto list = info[0].As<Napi::Array>();
      waiting.reserve(list.Length());
      for (uint32_t i = 0; i < list.Length(); ++i)
        waiting.push_back(list.Get(i).ToString().Utf8Value());
    }
    bool attached = Guard(env, [&] { return Open(env).Maintain(has_list ? &waiting : nullptr); });
    return Napi::Boolean::New(env, attached);
  }

  // While JS has receives pending, the doorbell keeps the event loop alive; otherwise not.
  Napi::Value SetWaiting(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bool waiting = info[0].ToBoolean().Value();
    if (waiting == waiting_ || shut_down_ || !doorbell_) return env.Undefined();
    waiting_ = waiting;
    auto* handle = reinterpret_cast<uv_handle_t*>(&doorbell_->poll);
    if (waiting) {
      uv_ref(handle);
    } else {
      uv_unref(handle);
    }
    return env.Undefined();
  }

  // Before the event loop may sleep on the doorbell: true when armed (a ring will write to the
  // FIFO), false when a ring came in already (look now instead of sleeping).
  Napi::Value Arm(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return Napi::Boolean::New(env, Open(env).Arm());
  }

  // Whether someone rang since we last looked (fallback when bellView() is not available).
  Napi::Value BellRung(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return Napi::Boolean::New(env, Open(env).BellRung());
  }

  // An Int32Array over this instance's Slot words [state, bell, sleeping] in shared memory, so the
  // event loop can poll the bell and arm with Atomics, with no native call and no syscall. A
  // mapping of its own (unmapped when the view is collected) keeps it valid whatever happens to the
  // layer. null where external buffers are not allowed (then: bellRung() and arm()).
  Napi::Value BellView(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    shmch::Layer& layer = Open(env);
    uint64_t offset = layer.slot_offset();
    uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    uint64_t base = offset & ~(page - 1);
    size_t length =
        static_cast<size_t>(offset - base + sizeof(shmch::Slot) + page - 1) & ~(page - 1);
    void* map = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, layer.segment_fd(),
                     static_cast<off_t>(base));
    if (map == MAP_FAILED) return env.Null();
    napi_value buffer;
    auto* hint = new size_t(length);
    napi_status status = napi_create_external_arraybuffer(
        env, map, length,
        [](napi_env, void* data, void* h) {
          munmap(data, *static_cast<size_t*>(h));
          delete static_cast<size_t*>(h);
        },
        hint, &buffer);
    if (status != napi_ok) {
      munmap(map, length);
      delete hint;
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value ignored;
        napi_get_and_clear_last_exception(env, &ignored);
      }
      return env.Null();
    }
    static_assert(offsetof(shmch::Slot, bell) == 4 && offsetof(shmch::Slot, sleeping) == 8,
                  "lib/shm/shm-layer.ts reads the bell and the armed word at these indices");
    return Napi::Int32Array::New(env, 3, Napi::ArrayBuffer(env, buffer), offset - base);
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    shmch::LayerStats s =
        Guard(env, [&] { return WithLockTimeout([&] { return Open(env).Stats(); }); });
    Napi::Object o = Napi::Object::New(env);
    o.Set("slot", layer_->slot_index());
    o.Set("processes", s.slots_attached);
    o.Set("channels", s.channels);
    o.Set("groups", s.groups);
    o.Set("members", s.members);
    o.Set("queued", s.queued);
    o.Set("nodesFree", s.nodes_free);
    o.Set("arenaBytes", static_cast<double>(s.arena_bytes));
    o.Set("arenaUsedBytes", static_cast<double>(s.arena_used_bytes));
    o.Set("segmentBytes", static_cast<double>(s.segment_bytes));
    o.Set("shmBytes", static_cast<double>(s.shm_bytes));
    o.Set("messagesSent", static_cast<double>(s.messages_sent));
    o.Set("messagesReceived", static_cast<double>(s.messages_received));
    o.Set("messagesExpired", static_cast<double>(s.messages_expired));
    o.Set("messagesDamaged", static_cast<double>(s.messages_damaged));
    o.Set("deliveriesSkippedFull", static_cast<double>(s.deliveries_skipped_full));
    o.Set("sendsRefusedFull", static_cast<double>(s.sends_refused_full));
    o.Set("messagesOrphaned", static_cast<double>(s.messages_orphaned));
    o.Set("lockRecoveries", s.lock_recoveries);
    o.Set("ringFailures", static_cast<double>(s.ring_failures));
    return o;
  }

  // lockHoldStats(reset?: boolean): per operation kind, how long this instance held the segment
  // lock: { count, p50Ns, p99Ns, maxNs, totalNs, buckets }. Read without the lock (the histogram
  // is this instance's own memory); `buckets`, [upper edge ns, count] of each non-empty bucket,
  // lets samples of several processes be merged.
  Napi::Value LockHoldStats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const shmch::LockHoldStats& stats = Open(env).lock_hold();
    Napi::Object o = Napi::Object::New(env);
    using H = shmch::LockHoldHistogram;
    for (int k = 0; k < static_cast<int>(shmch::LockOp::kCount); ++k) {
      const H& h = stats.of[k];
      Napi::Object op = Napi::Object::New(env);
      op.Set("count", static_cast<double>(h.count()));
      op.Set("p50Ns", static_cast<double>(h.Percentile(0.50)));
      op.Set("p99Ns", static_cast<double>(h.Percentile(0.99)));
      op.Set("maxNs", static_cast<double>(h.max_ns()));
      op.Set("totalNs", static_cast<double>(h.total_ns()));
      Napi::Array buckets = Napi::Array::New(env);
      uint32_t n = 0;
      for (int b = 0; b < H::kBuckets; ++b) {
        if (h.bucket(b) == 0) continue;
        Napi::Array pair = Napi::Array::New(env, 2);
        pair.Set(0u, static_cast<double>(H::UpperEdgeOf(b)));
        pair.Set(1u, static_cast<double>(h.bucket(b)));
        buckets.Set(n++, pair);
      }
      op.Set("buckets", buckets);
      o.Set(shmch::LockOpName(static_cast<shmch::LockOp>(k)), op);
    }
    if (info.Length() > 0 && info[0].ToBoolean().Value()) layer_->ResetLockHold();
    return o;
  }

  Napi::Value Config(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    shmch::SegmentConfig c = layer_->Config();
    Napi::Object o = Napi::Object::New(env);
    o.Set("size", static_cast<double>(c.size));
    o.Set("maxChannels", c.max_channels);
    o.Set("maxGroups", c.max_groups);
    o.Set("maxMembers", c.max_members);
    o.Set("maxNodes", c.max_nodes);
    o.Set("maxMessageSize", c.max_message_size);
    return o;
  }

  Napi::Value Channels(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t limit = ListLimit(info);
    auto list =
        Guard(env, [&] { return WithLockTimeout([&] { return Open(env).ListChannels(limit); }); });
    return ObjectsOf(env, list, [](Napi::Object& o, const shmch::ChannelInfo& channel) {
      o.Set("name", channel.name);
      o.Set("depth", channel.depth);
      o.Set("groups", channel.memberships);
    });
  }

  Napi::Value Groups(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t limit = ListLimit(info);
    auto list =
        Guard(env, [&] { return WithLockTimeout([&] { return Open(env).ListGroups(limit); }); });
    return ObjectsOf(env, list, [](Napi::Object& o, const shmch::GroupInfo& group) {
      o.Set("name", group.name);
      o.Set("members", group.members);
    });
  }

  Napi::Value Verify(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto problems = Guard(env, [&] { return WithLockTimeout([&] { return Open(env).Verify(); }); });
    Napi::Array out = Napi::Array::New(env, problems.size());
    for (uint32_t i = 0; i < problems.size(); ++i) out.Set(i, problems[i]);
    return out;
  }

  Napi::Value IsUnlinked(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), layer_->IsUnlinked());
  }

  // Removes the layer if no other process uses it and no unexpired message waits; closes us then.
  Napi::Value Prune(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bool removed =
        Guard(env, [&] { return WithLockTimeout([&] { return Open(env).PruneIfUnused(); }); });
    if (removed) Shutdown();
    return Napi::Boolean::New(env, removed);
  }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  Napi::Value Slot(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), layer_->slot_index());
  }

  static Napi::Value Destroy(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = info[0].ToString().Utf8Value();
    bool removed = Guard(env, [&] { return shmch::Layer::Destroy(name); });
    return Napi::Boolean::New(env, removed);
  }

  // Live instances attached to a layer's segment, read from their liveness locks only: works
  // for a segment of any layout version. -1 when there is no such segment.
  static Napi::Value AttachedProcesses(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = info[0].ToString().Utf8Value();
    int count = Guard(env, [&] { return shmch::Segment::AttachedInstances(name); });
    return Napi::Number::New(env, count);
  }

  static Napi::Value PeekQueued(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = info[0].ToString().Utf8Value();
    int64_t queued = Guard(env, [&] { return shmch::Segment::PeekQueued(name); });
    return Napi::Number::New(env, static_cast<double>(queued));
  }

  // A JS string into `out`, reusing its memory (one N-API call, no allocation): any valid name
  // fits the stack buffer many times over. A string that may not have fitted (napi stops short
  // of a character that would not fit, so within 4 bytes of the end) takes the allocating path.
  // No type check first: napi_get_value_string_utf8 fails for anything but a string.
  static void ReadName(Napi::Env env, Napi::Value value, std::string& out) {
    if (!TryReadString(env, value, out)) out = value.ToString().Utf8Value();
  }

  // False (and `out` untouched) when `value` is not a string.
  static bool TryReadString(Napi::Env env, Napi::Value value, std::string& out) {
    char buffer[1024];
    size_t length = 0;
    if (napi_get_value_string_utf8(env, value, buffer, sizeof buffer, &length) != napi_ok) {
      return false;
    }
    if (length + 4 >= sizeof buffer) {
      out = value.As<Napi::String>().Utf8Value();
    } else {
      out.assign(buffer, length);
    }
    return true;
  }

  // A boolean argument; anything else by its truthiness (one call in the common case).
  static bool Flag(Napi::Env env, Napi::Value value) {
    bool flag = false;
    if (napi_get_value_bool(env, value, &flag) == napi_ok) return flag;
    return value.ToBoolean().Value();
  }

  std::unique_ptr<shmch::Layer> layer_;
  std::shared_ptr<DirectTarget> direct_;  // send()'s and receive()'s way to this instance
  // receive()'s request list and result batch, kept between calls (see Receive).
  std::vector<shmch::ReceiveRequest> receive_requests_;
  std::vector<shmch::PayloadPiece> send_pieces_;  // send()'s, reused: a send allocates nothing
  std::string send_channel_;
  shmch::ReceivedBatch receive_batch_;
  // receiveAny()'s position list and result batch, likewise.
  std::vector<uint32_t> any_positions_;
  shmch::AnyBatch any_batch_;
  Napi::FunctionReference wake_;
  std::unique_ptr<Napi::AsyncContext> wake_context_;
  Doorbell* doorbell_ = nullptr;
  bool waiting_ = false;
  uint64_t lock_timeout_ns_ = kDefaultLockTimeoutMs * 1'000'000;
  uint64_t lock_slice_ns_ = 1'000'000;
  bool shut_down_ = false;
};

// The core's limits and defaults, read from the core itself: lib/shm uses them, and
// test/constants.test.ts checks that the rules lib/ applies to every backend say the same.
Napi::Object Constants(Napi::Env env) {
  const shmch::LayerOptions layer;  // as default-constructed: the core's defaults
  const shmch::SegmentConfig& segment = layer.segment;
  auto number = [&](double value) { return Napi::Number::New(env, value); };
  Napi::Object constants = Napi::Object::New(env);
  constants.Set("maxNameLength", number(shmch::kMaxNameLength));
  constants.Set("maxClientLength", number(shmch::kMaxClientLength));
  constants.Set("damagedMessageLength", number(shmch::kDamagedMessage));
  constants.Set("outOfLockBytes", number(shmch::kOutOfLockBytes));
  constants.Set("defaultCapacity", number(layer.capacity));
  constants.Set("defaultExpiryMs", number(static_cast<double>(layer.expiry_ms)));
  constants.Set("defaultGroupExpiryMs", number(static_cast<double>(layer.group_expiry_ms)));
  constants.Set("defaultLockTimeoutMs", number(kDefaultLockTimeoutMs));
  constants.Set("defaultSegmentSize", number(static_cast<double>(segment.size)));
  constants.Set("defaultMaxChannels", number(segment.max_channels));
  constants.Set("defaultMaxGroups", number(segment.max_groups));
  constants.Set("defaultMaxMembers", number(segment.max_members));
  constants.Set("defaultMaxNodes", number(segment.max_nodes));
  constants.Set("defaultMaxMessageSize", number(segment.max_message_size));
  constants.Set("defaultMode", number(segment.mode));
  // Every code a core error can carry: ErrorCodeName() of each ErrorCode, up to the first
  // value it has no name for.
  Napi::Array codes = Napi::Array::New(env);
  for (uint32_t i = 0;; ++i) {
    const char* name = shmch::ErrorCodeName(static_cast<shmch::ErrorCode>(i));
    if (std::strcmp(name, "EUNKNOWN") == 0) break;
    codes.Set(i, Napi::String::New(env, name));
  }
  constants.Set("errorCodes", codes);
  return constants;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  shmch::InitFaultPointFromEnvironment();
  exports.Set("NativeLayer", NativeLayer::Define(env));
  exports.Set("layoutVersion", Napi::Number::New(env, shmch::kLayoutVersion));
  // Where the lock word sits, for tests that scribble on everything else.
  exports.Set("lockOffset", Napi::Number::New(env, offsetof(shmch::Header, lock)));
  exports.Set("lockBytes", Napi::Number::New(env, sizeof(shmch::SharedLock)));
  exports.Set("constants", Constants(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(shm_channels, Init)
