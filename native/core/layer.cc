// The channel layer's public operations, in the order of the spec (channels_redis's core.py reads
// the same way). The helpers live by concern: slots.cc (process slots, the segment lock),
// queues.cc (channel records, queues, message blocks), groups.cc (groups and memberships),
// wakeups.cc (waiters and doorbells), payload.cc (large payloads copied outside the lock),
// receive_any.cc (receiveAny), recovery.cc (rebuilding derived state, Verify).
#include "layer.h"

#include <cstdio>
#include <cstring>
#include <optional>
#include <unordered_set>

#include "checksum.h"
#include "clock.h"
#include "critical.h"
#include "fault_points.h"
#include "tables.h"

namespace shmch {

namespace {

// Tags the capacity options, so a record's cached capacity is used only by processes that would
// compute the same one. Never 0 (0 marks "not known").
uint32_t CapacityTag(const LayerOptions& o) {
  std::string key = std::to_string(o.capacity);
  for (const auto& [pattern, capacity] : o.channel_capacity) {
    key += '\0' + pattern + '\0' + std::to_string(capacity);
  }
  uint32_t tag = HashName(key);
  return tag ? tag : 1;
}

// The in-use records of a channel or group table, at most `limit`, each described by `describe`
// from the record and its name (length read once and clamped).
template <typename Info, typename RecordAt, typename Describe>
std::vector<Info> ListInUse(uint32_t records, uint32_t limit, RecordAt record_at,
                            Describe describe) {
  std::vector<Info> out;
  for (uint32_t i = 0; i < records && out.size() < limit; ++i) {
    const auto& record = record_at(i);
    if (record.in_use != 1) continue;
    uint32_t len = LoadOnce(record.name_length);
    if (len > kMaxNameLength) len = kMaxNameLength;
    out.push_back(describe(record, std::string(record.name, len)));
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Open, attach, close
// ---------------------------------------------------------------------------------------------

Layer::Layer(const LayerOptions& options) : options_(options), capacity_tag_(CapacityTag(options)) {
  segment_ = std::make_unique<Segment>(options_.segment);  // cleans up after itself on failure
  arena_ = std::make_unique<Arena>(*segment_);
  doorbells_ = std::make_unique<Doorbells>(options_.segment.name, options_.segment.mode,
                                           options_.segment.allow_foreign);
  try {
    ClaimSlot();
    doorbells_->OpenOwn(slot_);
  } catch (const Error& e) {
    AbandonFailedOpen();
    if (e.code() != ErrorCode::kNoSpace) throw;
    char size[64];
    std::snprintf(size, sizeof size, " (size %.1f MiB)",
                  static_cast<double>(options_.segment.size) / (1 << 20));
    throw Error(ErrorCode::kNoSpace, "cannot open layer '" + options_.segment.name + "'" + size +
                                         ": " + e.what() + "; " + segment_->SpaceReport() + ". " +
                                         Segment::SpaceAdvice());
  } catch (...) {
    AbandonFailedOpen();
    throw;
  }
}

Layer::~Layer() {
  try {
    Close();
  } catch (...) {
  }
}

bool Layer::Destroy(const std::string& layer_name) {
  Doorbells::UnlinkAll(layer_name);
  return Segment::Unlink(layer_name);
}

void Layer::Close() {
  if (closed_) return;
  closed_ = true;
  ReleaseSlot();
  // The doorbell's descriptors go now, not when the owner of this object gets round to
  // destroying it (a garbage-collected JS handle may live on for a long time after close()).
  // Senders that still ring us get "no reader" and count a failed ring, nothing worse.
  doorbells_.reset();
}

// ---------------------------------------------------------------------------------------------
// Send
// ---------------------------------------------------------------------------------------------

bool Layer::Send(std::string_view channel, const uint8_t* data, uint32_t length) {
  uint32_t capacity = 0;
  SendOutcome outcome = TrySend(channel, data, length, capacity);
  if (outcome == SendOutcome::kFull) {
    throw Error(ErrorCode::kChannelFull, "channel " + std::string(channel) + " is full (capacity " +
                                             std::to_string(capacity) + ")");
  }
  return outcome == SendOutcome::kQueued;
}

SendOutcome Layer::TrySend(std::string_view channel, const uint8_t* data, uint32_t length,
                           uint32_t& capacity) {
  const PayloadPiece whole{data, length};
  return TrySendPieces(channel, &whole, 1, capacity);
}

SendOutcome Layer::TrySendPieces(std::string_view channel, const PayloadPiece* pieces,
                                 uint32_t count, uint32_t& capacity) {
  uint64_t total = 0;
  for (uint32_t i = 0; i < count; ++i) total += pieces[i].length;
  // Checked before it is narrowed: pieces adding up past 4 GiB must not wrap to a small length.
  if (total > UINT32_MAX) CheckMessageSize(UINT32_MAX);
  const uint32_t length = static_cast<uint32_t>(total);
  SendOutcome outcome;
  try {
    outcome = SendOnce(channel, pieces, count, length, capacity);
  } catch (const Error& e) {
    // The lock is released by now (the guard of SendOnce is gone): yield with nothing held.
    if (RefusalBackoff::IsForRoom(e.code())) backoff_.Refused();
    throw;
  }
  if (outcome == SendOutcome::kFull) {
    backoff_.Refused();
  } else {
    backoff_.Sent();
  }
  return outcome;
}

bool Layer::RefusesAsFull(std::string_view channel, uint32_t& capacity) {
  CheckOpen();
  ValidateName(channel, true, "channel");
  if (StillFull(channel)) {
    ++uncounted_refusals_;
    capacity = last_full_.capacity;
    backoff_.Refused();
    return true;
  }
  bool full;
  {
    Critical guard(*this, LockOp::kSend);
    // Where a send would queue (a '!' channel: its instance's inbox), found without creating
    // records: a channel that has none holds nothing and is not full.
    auto table = Channels(*segment_);
    SendTarget to;
    const std::string_view inbox =
        channel.find('!') == std::string_view::npos ? std::string_view() : InboxOf(channel);
    to.queue = table.Find(inbox.empty() ? channel : inbox);
    if (!inbox.empty() && to.queue != kNil) to.target = table.Find(channel);
    const uint64_t now = LockedAtMs();
    if (to.queue == kNil) {
      full = false;
    } else if (inbox.empty() || to.target != kNil) {
      full = IsFull(to, channel, now, capacity);
    } else {
      // A '!' channel without a record of its own: its capacity from its name's globs, as the
      // send would give the record it makes (the inbox name's may be another).
      Channel& c = segment_->channel(to.queue);
      DropHeadExpired(c, now);
      capacity = CapacityOf(channel);
      full = c.count >= capacity;
      if (full) {
        NoteFull(channel, to.queue, capacity);
        ++segment_->header().sends_refused_full;
      }
      MaybeReleaseChannel(to.queue);
    }
  }
  if (full) backoff_.Refused();  // as TrySend: with the lock released
  return full;
}

SendOutcome Layer::SendOnce(std::string_view channel, const PayloadPiece* pieces, uint32_t count,
                            uint32_t length, uint32_t& capacity_out) {
  CheckOpen();
  ValidateName(channel, true, "channel");
  CheckMessageSize(length);
  // A large payload is copied outside the lock (payload.cc).
  if (length >= kOutOfLockBytes) return SendOutOfLock(channel, pieces, count, length, capacity_out);
  Critical guard(*this, LockOp::kSend);
  const uint64_t now = LockedAtMs();
  SendTarget to = FindSendTarget(channel);
  if (to.queue == kNil) return SendOutcome::kOrphaned;
  if (IsFull(to, channel, now, capacity_out)) return SendOutcome::kFull;
  SendLocked(to, pieces, count, length, now);
  PrefetchNextSend();
  return SendOutcome::kQueued;
}

// ---------------------------------------------------------------------------------------------
// Receive
// ---------------------------------------------------------------------------------------------

void Layer::Receive(const std::vector<ReceiveRequest>& requests, ReceivedBatch& out,
                    bool covers_all_waits, uint64_t extra_bytes) {
  CheckOpen();
  // Before the lock: a bad name in the batch fails the whole call and touches nothing.
  for (const ReceiveRequest& req : requests) ValidateName(req.channel, true, "channel");
  std::vector<PinnedMessage> pins;  // large payloads, copied out after the lock (payload.cc)
  HoldsOnError holds_on_error{*this, &pins};
  std::optional<Critical> guard;
  guard.emplace(*this, LockOp::kReceive);
  const uint64_t now = LockedAtMs();
  const uint64_t my_bit = uint64_t{1} << (slot_ % 64);
  Slot& me = segment_->slot(slot_);
  // Consumed before any queue is looked at: a message queued after this point rings again.
  if (covers_all_waits) me.bell.store(0, std::memory_order_seq_cst);
  // Phase 1 copies payloads out and registers us as a waiter where we are left short; nothing is
  // popped yet, so an error or our death here takes no message with it.
  std::vector<std::pair<uint32_t, uint32_t>>& pops = receive_pops_;  // (channel, nodes to pop)
  pops.clear();
  bool damaged_blocks = false;
  std::vector<uint32_t> asked;  // channel of each request, when the ready list is answered too
  // Deliveries of inbox nodes taken that resolved to fewer member channels than they were sent
  // for (discarded or released since): counted orphaned, not received.
  uint64_t lost = 0;
  if (!target_name_index_.empty()) target_name_index_.clear();
  std::unordered_set<uint32_t> walked_channels;
  if (requests.size() > 1) walked_channels.reserve(requests.size());
  for (uint32_t r = 0; r < requests.size(); ++r) {
    const ReceiveRequest& req = requests[r];
    // Wanted 0 with extra: take what is there now (within the budget), wait for nothing.
    if (req.wanted == 0 && req.extra == 0) continue;
    uint32_t index = Channels(*segment_).Find(req.channel);
    // Two walks of one queue would copy its head twice. A set, not a scan of `pops`: a drain over
    // thousands of channels must stay linear under the lock.
    if (requests.size() > 1 && index != kNil && !walked_channels.insert(index).second) {
      throw Error(ErrorCode::kInvalidArgument, "a receive batch names a channel twice");
    }
    uint32_t got = 0, walked = 0;
    bool reached_end = true;
    const uint32_t most = req.wanted + req.extra < req.wanted ? UINT32_MAX : req.wanted + req.extra;
    if (index != kNil) {
      Channel& c = segment_->channel(index);
      uint32_t n = LoadOnce(c.head);
      while (got < most && n != kNil) {
        // Every field used below is read once into a local and checked there: another process
        // may rewrite the node or the block header while we look.
        const uint32_t node_index = n;
        const Node& shared_node = segment_->node(n);
        const uint32_t block = LoadOnce(shared_node.block);
        const uint64_t expires_at = LoadOnce(shared_node.expires_at_ms);
        BlockInfo info{};
        if (got >= req.wanted && expires_at > now) {
          // An extra message: only while the budget lasts (checked before it is walked, so a
          // message left behind is not popped).
          info = segment_->ReadBlock(block);
          const uint64_t cost = info.message ? info.length : 0;
          if (cost > extra_bytes) break;
          extra_bytes -= cost;
        }
        if (++walked > segment_->node_records()) segment_->Corrupt("queue loops");
        n = LoadOnce(shared_node.next);
        if (expires_at <= now) continue;
        // An inbox node names what it is for: resolved now to channels (our own members of its
        // group, or its direct target). One that names none any more is taken, not handed out.
        const uint32_t target = LoadOnce(shared_node.target);
        uint32_t target_count = 0;
        if (target != kNil) {
          target_count = ResolveTargets(index, target, LoadOnce(shared_node.seq),
                                        LoadOnce(shared_node.sent_at_ms), &out);
          const uint32_t deliveries = DeliveriesOf(shared_node);
          if (target_count < deliveries) lost += deliveries - target_count;
          if (target_count == 0) continue;
        }
        ++got;
        out.request_of.push_back(r);
        out.target_count_of.push_back(target_count);
        const uint64_t left = expires_at - now;
        out.expires_in_ms.push_back(left > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(left));
        if (LeaveForLater(block, node_index, out.bytes, out.length_of, pins)) continue;
        if (!CopyOut(block, out.bytes, out.length_of)) damaged_blocks = true;
      }
      reached_end = n == kNil;
      if (walked) pops.emplace_back(index, walked);
    }
    if (got < req.wanted) {
      if (index == kNil) index = MakeChannel(req.channel);
      segment_->channel(index).waiters[slot_ / 64] |= my_bit;
    } else if (index != kNil) {
      // An inbox this walk emptied keeps our wait (see ReceivedBatch::emptied); a receive with
      // wanted 0 waits for nothing and withdraws it.
      const bool keep = req.wanted > 0 && reached_end && req.channel.back() == '!';
      if (keep) {
        segment_->channel(index).waiters[slot_ / 64] |= my_bit;
        out.emptied.push_back(r);
      } else {
        segment_->channel(index).waiters[slot_ / 64] &= ~my_bit;
      }
    }
    if (covers_all_waits) asked.push_back(index);
  }
  FAULT_POINT(3);
  // Phase 2 commits: pops what phase 1 copied, and the expired messages it stepped over.
  for (auto [index, count] : pops) CommitWalk(index, count, now, &pins);
  // A receive loop comes back for the next message once its caller has decoded this one: the
  // lines of that message were written by the sender's core, so ask for them now and let their
  // transfer overlap the decoding (the node now, its block once the node is likely here).
  const uint32_t next_of = pops.size() == 1 ? pops[0].first : kNil;
  if (next_of != kNil) PrefetchHead(next_of, false);
  if (lost) {
    Header& h = segment_->header();
    h.messages_received = h.messages_received > lost ? h.messages_received - lost : 0;
    h.messages_orphaned += lost;
  }
  if (covers_all_waits) {
    // Every channel we still wait on was asked for above, so the ready list is answered, except
    // for ready channels we no longer wait on (cancelled receives): withdraw those waits and pass
    // their wake-up on, or another waiter would sleep beside a queued message.
    uint32_t n = me.ready_count < kReadyEntries ? me.ready_count : kReadyEntries;
    for (uint32_t i = 0; i < n; ++i) {
      uint32_t index = me.ready[i];
      if (index >= segment_->channel_records()) continue;
      Channel& c = segment_->channel(index);
      if (c.in_use != 1 || !(c.waiters[slot_ / 64] & my_bit)) continue;
      bool found = false;
      for (uint32_t k : asked) found = found || k == index;
      if (!found) WithdrawWait(index);
    }
    me.ready_count = 0;
    me.ready_overflow = 0;
  }
  FAULT_POINT(25);
  CountDamaged(out.length_of, damaged_blocks);
  guard.reset();  // the pinned payloads are copied with no lock held
  holds_on_error.pins = nullptr;
  if (!pins.empty()) FinishPinned(pins, out.bytes, out.placed, out.length_of, LockOp::kReceive);
  if (next_of != kNil) PrefetchHead(next_of, true);
}

// ---------------------------------------------------------------------------------------------
// Receive any: DefineSet, ForgetSet and ReceiveAny are in receive_any.cc
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// New channel: names are made by the caller ('<prefix>.<client>!<random>' for process-local
// ones); the core checks them and drops a '!' channel its owner is finished with.
// ---------------------------------------------------------------------------------------------

bool Layer::IsValidName(std::string_view name, bool allow_bang) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  int bangs = 0;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || (allow_bang && c == '!' && ++bangs == 1);
    if (!ok) return false;
  }
  return true;
}

void Layer::ValidateName(std::string_view name, bool allow_bang, const char* what) {
  if (name.empty() || name.size() > kMaxNameLength) {
    throw Error(ErrorCode::kInvalidArgument, std::string(what) + " name must be 1 to " +
                                                 std::to_string(kMaxNameLength) + " characters");
  }
  if (!IsValidName(name, allow_bang)) {
    throw Error(ErrorCode::kInvalidArgument,
                std::string(what) + " name contains an invalid character: " + std::string(name));
  }
}

uint32_t Layer::ReleaseChannel(std::string_view channel) {
  CheckOpen();
  ValidateName(channel, true, "channel");
  Critical guard(*this);
  Header& h = segment_->header();
  auto table = Channels(*segment_);
  uint32_t index = table.Find(channel);
  if (index == kNil) return 0;
  uint32_t dropped = 0;
  // Its direct sends wait in its instance's inbox; group deliveries there no longer resolve to
  // it once its memberships are gone (DropChannel), and those that were for it alone go too.
  std::string_view inbox_name = InboxOf(channel);
  const uint32_t inbox = inbox_name.empty() ? kNil : table.Find(inbox_name);
  if (inbox != kNil && inbox != index) dropped += DropInboxEntries(inbox, index);
  // The last entry's going may have released the record already.
  if (segment_->channel(index).in_use == 1) dropped += DropChannel(index);
  if (inbox != kNil && inbox != index && segment_->channel(inbox).in_use == 1) {
    dropped += DropInboxEntries(inbox, kNil);
    MaybeReleaseChannel(inbox);
  }
  h.messages_orphaned += dropped;
  return dropped;
}

// ---------------------------------------------------------------------------------------------
// Group add
// ---------------------------------------------------------------------------------------------

void Layer::GroupAdd(std::string_view group, std::string_view channel) {
  CheckOpen();
  ValidateName(group, false, "group");
  ValidateName(channel, true, "channel");
  const uint64_t now = MonotonicMs();
  uint64_t expires_at = now + options_.group_expiry_ms;
  Critical guard(*this, LockOp::kGroupAdd);
  Header& h = segment_->header();
  bool new_group = false;
  uint32_t g = FindOrInsertGroup(group, new_group);
  // A group this call made goes again if the membership cannot be made.
  auto undo_group = [&] {
    if (new_group) Groups(*segment_).Remove(g, h.groups_used);
  };
  uint32_t c;
  try {
    c = EnsureChannel(channel);
  } catch (...) {
    undo_group();
    throw;
  }
  uint32_t existing = FindMember(g, c);
  if (existing != kNil) {
    Member& member = segment_->member(existing);
    // A '!' member that had lapsed (kept by housekeeping for a message lifetime) comes back as a
    // new membership: a group delivery sent while it had lapsed, still in its inbox, is not for
    // it (its fan was not counted for it). The cost: one sent before it lapsed and not yet taken
    // no longer reaches it either (telling the two apart needs the lapse kept per member).
    if (member.fan != kNil && member.expires_at_ms <= now) member.added_seq = h.next_seq;
    member.expires_at_ms = expires_at;
    // An expired '!' member housekeeping has kept is live again: its fan counts again.
    const uint32_t fan = member.fan;
    if (fan < segment_->member_records() && segment_->member(fan).in_use == kFanRecord &&
        segment_->member(fan).group == g) {
      segment_->member(fan).expires_at_ms = 0;
    }
    return;
  }
  // A '!' member of an instance joins the fan of (group, its inbox), made with its first member.
  uint32_t inbox = kNil, fan = kNil;
  bool new_fan = false;
  auto undo = [&] {
    if (new_fan) RemoveFan(fan);  // releases the inbox record if nothing else keeps it
    if (inbox != kNil) MaybeReleaseChannel(inbox);
    MaybeReleaseChannel(c);
    undo_group();
  };
  auto table_full = [&] {
    return Error(ErrorCode::kTableFull, "no free group membership record (maxMembers " +
                                            std::to_string(segment_->member_limit()) + ")");
  };
  uint32_t m = kNil;
  try {
    std::string_view inbox_name = InboxOf(channel);
    if (!inbox_name.empty()) {
      inbox = EnsureChannel(inbox_name);
      fan = FindFan(g, inbox);
      if (fan == kNil) {
        fan = TakeMemberRecord();
        if (fan == kNil) throw table_full();
        LinkFan(fan, g, inbox);
        new_fan = true;
        FAULT_POINT(28);
      }
    }
    m = TakeMemberRecord();
  } catch (...) {
    undo();
    throw;
  }
  if (m == kNil) {
    undo();
    throw table_full();
  }
  LinkMember(m, g, c, expires_at, fan);
}

// ---------------------------------------------------------------------------------------------
// Group discard
// ---------------------------------------------------------------------------------------------

void Layer::GroupDiscard(std::string_view group, std::string_view channel) {
  CheckOpen();
  ValidateName(group, false, "group");
  ValidateName(channel, true, "channel");
  Critical guard(*this, LockOp::kGroupDiscard);
  uint32_t g = FindGroup(group);
  if (g == kNil) return;
  uint32_t c = Channels(*segment_).Find(channel);
  if (c == kNil) return;
  uint32_t m = FindMember(g, c);
  if (m == kNil) return;
  DropMembership(m);
}

// ---------------------------------------------------------------------------------------------
// Group send
// ---------------------------------------------------------------------------------------------

uint32_t Layer::GroupSend(std::string_view group, const uint8_t* data, uint32_t length) {
  CheckOpen();
  ValidateName(group, false, "group");
  CheckMessageSize(length);
  uint64_t now = MonotonicMs();
  Critical guard(*this, LockOp::kGroupSend);
  Header& h = segment_->header();
  uint32_t g = FindGroup(group);
  if (g == kNil) return 0;
  uint32_t block = kNil;
  uint32_t delivered = 0;
  bool out_of_space = false;  // the arena or node pool ran out: the rest are skipped too
  // The group's list holds its ordinary members and one fan per inbox ('!' members of one
  // instance and prefix): one node per entry, so the walk follows processes, not '!' members.
  uint32_t m = segment_->group(g).first_member;
  for (uint32_t steps = 0; m != kNil; ++steps) {
    if (steps > segment_->member_records()) segment_->Corrupt("group member list loops");
    Member& member = segment_->member(m);
    uint32_t next = member.next_in_group;
    const bool is_fan = member.in_use == kFanRecord;
    if (!is_fan && member.expires_at_ms <= now) {
      RemoveMember(m);  // the group itself goes after the walk, if that emptied it
      m = next;
      continue;
    }
    // A fan's expired members are left to housekeeping (a delivery sent before they expired,
    // resolved later, still reaches them); its count of the unexpired ones is kept until the
    // earliest of them expires.
    uint32_t reached = 1;
    if (is_fan) {
      reached = member.expires_at_ms > now ? member.live_peers : CountLivePeers(m, now);
      if (reached > member.peer_count) reached = CountLivePeers(m, now);  // a scribbled count
      if (reached == 0) {
        m = next;
        continue;
      }
    }
    Channel& c = segment_->channel(member.channel);
    DropHeadExpired(c, now);
    uint32_t name_length = LoadOnce(c.name_length);
    std::string_view name(c.name, name_length < kMaxNameLength ? name_length : kMaxNameLength);
    if (!out_of_space && c.count < CapacityOf(c, name)) {
      try {
        if (block == kNil) block = StoreBlock(data, length);
        if (is_fan) {
          Enqueue(member.channel, block, now + options_.expiry_ms, g | kGroupTarget, reached);
        } else {
          Enqueue(member.channel, block, now + options_.expiry_ms);
        }
        delivered += reached;
      } catch (const Error& e) {
        ReleaseUnqueuedBlock(block);
        // Out of arena or nodes: the members not reached yet are skipped, as full ones are.
        // Only a message that reached nobody is reported, so the sender knows it went nowhere.
        if (e.code() != ErrorCode::kArenaFull || delivered == 0) throw;
        out_of_space = true;
        h.deliveries_skipped_full += reached;
      }
    } else {
      h.deliveries_skipped_full += reached;
    }
    m = next;
  }
  if (block != kNil && delivered == 0) arena_->Free(block);
  h.messages_sent += delivered;
  RemoveGroupIfEmpty(g);
  return delivered;
}

// ---------------------------------------------------------------------------------------------
// Group members
// ---------------------------------------------------------------------------------------------

std::vector<std::string> Layer::GroupMembers(std::string_view group) {
  CheckOpen();
  ValidateName(group, false, "group");
  uint64_t now = MonotonicMs();
  std::vector<std::string> names;
  Critical guard(*this);
  uint32_t g = FindGroup(group);
  if (g == kNil) return names;
  auto add = [&](const Member& member) {
    if (member.in_use != 1 || member.group != g || member.expires_at_ms <= now) return;
    const Channel& channel = segment_->channel(member.channel);
    const uint32_t length = LoadOnce(channel.name_length);
    if (channel.in_use != 1 || length == 0 || length > kMaxNameLength) return;
    names.emplace_back(channel.name, length);
  };
  uint32_t m = segment_->group(g).first_member;
  // Every step of both walks counts: a fan's list that loops into another cannot go on forever.
  uint32_t steps = 0;
  while (m != kNil) {
    if (++steps > segment_->member_records()) segment_->Corrupt("group member list loops");
    // Copied once: what is checked is what is used, whatever another process writes meanwhile.
    const Member member = segment_->member(m);
    m = member.next_in_group;
    if (member.in_use != kFanRecord || member.group != g) {
      add(member);
      continue;
    }
    for (uint32_t p = member.next_peer; p != kNil;) {
      if (++steps > segment_->member_records()) segment_->Corrupt("fan member list loops");
      const Member peer = segment_->member(p);
      p = peer.next_peer;
      add(peer);
    }
  }
  return names;
}

// ---------------------------------------------------------------------------------------------
// Flush
// ---------------------------------------------------------------------------------------------

void Layer::Flush() {
  CheckOpen();
  Critical guard(*this, LockOp::kFlush);
  Header& h = segment_->header();
  for (uint32_t i = 0; i < segment_->member_records(); ++i) segment_->member(i).in_use = 0;
  for (uint32_t i = 0; i < segment_->group_records(); ++i) segment_->group(i).in_use = 0;
  FAULT_POINT(6);
  for (uint32_t i = 0; i < segment_->channel_records(); ++i) {
    Channel& c = segment_->channel(i);
    if (c.in_use != 1) continue;
    // Receivers that were waiting must look again and re-register on fresh records (Recover
    // below marks every slot's ready list as overflowed, so they look at everything).
    for (uint32_t w = 0; w < kSlotMaskWords; ++w) pending_ring_[w] |= c.waiters[w];
    c.in_use = 0;
  }
  // Everything derived (queues, free lists, arena, buckets) is rebuilt from the now-empty tables.
  Recover();
  ++h.flush_epoch;
}

// ---------------------------------------------------------------------------------------------
// Housekeeping and expiry
// ---------------------------------------------------------------------------------------------

// At most one segment-wide expiry sweep per this many ms, by whichever process comes first.
constexpr uint64_t kExpirySweepMs = 1000;

bool Layer::Maintain(const std::vector<std::string>* still_waiting) {
  CheckOpen();
  if (segment_->IsUnlinked()) return false;
  uint64_t now = MonotonicMs();
  Critical guard(*this, LockOp::kMaintain);
  Header& h = segment_->header();
  ReclaimDeadSlots();
  // The expiry sweep walks every membership and every queue under the lock; once per interval
  // for the whole segment is enough (expired messages are also dropped wherever a call meets
  // them), so with N processes it no longer runs N times per interval. Our own stale waits
  // below are ours alone to drop, every time.
  const uint64_t swept_at = h.expiry_swept_at_ms;
  const bool sweep = now >= swept_at + kExpirySweepMs || swept_at > now;
  if (sweep) h.expiry_swept_at_ms = now;
  for (uint32_t m = 0; sweep && m < segment_->member_records(); ++m) {
    Member& member = segment_->member(m);
    if (member.in_use != 1 || member.expires_at_ms > now) continue;
    // A '!' member's group deliveries wait in its inbox, resolved when taken: one sent before it
    // expired still reaches it, so it stays for a message lifetime after it expired.
    if (member.fan != kNil && member.expires_at_ms + options_.expiry_ms > now) continue;
    DropMembership(m);
  }
  // Our registrations on channels we no longer wait on would pin their records forever.
  std::vector<bool> keep_wait;
  if (still_waiting) {
    keep_wait.assign(segment_->channel_records(), false);
    auto table = Channels(*segment_);
    for (const std::string& name : *still_waiting) {
      uint32_t index = table.Find(name);
      if (index < keep_wait.size()) keep_wait[index] = true;
    }
  }
  const uint64_t my_bit = uint64_t{1} << (slot_ % 64);
  for (uint32_t c = 0; c < segment_->channel_records(); ++c) {
    Channel& ch = segment_->channel(c);
    if (ch.in_use != 1) continue;
    bool stale_wait = still_waiting && (ch.waiters[slot_ / 64] & my_bit) && !keep_wait[c];
    if ((ch.head == kNil || !sweep) && !stale_wait) continue;
    if (stale_wait) ch.waiters[slot_ / 64] &= ~my_bit;
    if (sweep) DropHeadExpired(ch, now);
    // A wake-up we were given for it goes to another waiter.
    if (stale_wait) PassWakeupOn(ch, c, slot_);
    MaybeReleaseChannel(c);
  }
  // Nothing sent since our last round: the layer is idle, give its empty arena chunks back.
  if (h.messages_sent == sent_at_last_maintain_) arena_->Trim();
  sent_at_last_maintain_ = h.messages_sent;
  return true;
}

bool Layer::PruneIfUnused() {
  CheckOpen();
  bool unused = false;
  {
    Critical guard(*this);
    ReclaimDeadSlots();
    DropAllExpired(MonotonicMs());
    Header& h = segment_->header();
    unused = !AnyOtherSlotAlive() && h.free_nodes == segment_->node_records();
    if (!unused) arena_->Trim();
  }
  if (!unused) return false;
  Close();
  if (!segment_->IsUnlinked()) Destroy(options_.segment.name);
  return true;
}

bool Layer::TakeReady(std::vector<std::string>& names) {
  CheckOpen();
  Critical guard(*this);
  Slot& s = segment_->slot(slot_);
  // Consumed before the list is read: a ring after this point sets it again.
  s.bell.store(0, std::memory_order_seq_cst);
  bool complete = s.ready_overflow == 0 && s.ready_count <= kReadyEntries;
  if (complete) {
    for (uint32_t i = 0; i < s.ready_count; ++i) {
      uint32_t index = s.ready[i];
      if (index >= segment_->channel_records()) continue;
      Channel& c = segment_->channel(index);
      uint32_t length = LoadOnce(c.name_length);
      if (c.in_use != 1 || length == 0 || length > kMaxNameLength) continue;
      names.emplace_back(c.name, length);
    }
  }
  s.ready_count = 0;
  s.ready_overflow = 0;
  return complete;
}

void Layer::Unwait(const std::vector<std::string>& channels) {
  CheckOpen();
  for (const std::string& name : channels) ValidateName(name, true, "channel");
  Critical guard(*this);
  for (const std::string& name : channels) {
    uint32_t index = Channels(*segment_).Find(name);
    if (index != kNil) WithdrawWait(index);
  }
}

void Layer::CountBufferDrops(uint64_t expired, uint64_t orphaned, uint64_t skipped_full) {
  CheckOpen();
  if (expired == 0 && orphaned == 0 && skipped_full == 0) return;
  Critical guard(*this);
  Header& h = segment_->header();
  const uint64_t moved = expired + orphaned + skipped_full;
  h.messages_received = h.messages_received > moved ? h.messages_received - moved : 0;
  h.messages_expired += expired;
  h.messages_orphaned += orphaned;
  h.deliveries_skipped_full += skipped_full;
}

bool Layer::Arm() {
  Slot& s = segment_->slot(slot_);
  // Dekker handshake with Doorbells::Ring: publish `sleeping`, then look at the bell.
  s.sleeping.store(1, std::memory_order_seq_cst);
  if (s.bell.load(std::memory_order_seq_cst) == 0) return true;
  s.sleeping.store(0, std::memory_order_seq_cst);
  return false;
}

void Layer::Disarm() {
  segment_->slot(slot_).sleeping.store(0, std::memory_order_seq_cst);
  if (doorbells_) doorbells_->DrainOwn();
}

bool Layer::TakeBell() {
  return segment_->slot(slot_).bell.exchange(0, std::memory_order_seq_cst) != 0;
}

uint64_t Layer::slot_offset() const {
  return static_cast<uint64_t>(reinterpret_cast<uint8_t*>(&segment_->slot(slot_)) -
                               segment_->base());
}

// ---------------------------------------------------------------------------------------------
// Stats and inspection (Verify is in recovery.cc)
// ---------------------------------------------------------------------------------------------

LayerStats Layer::Stats() {
  CheckOpen();
  Critical guard(*this);
  Header& h = segment_->header();
  LayerStats s{};
  for (uint32_t i = 0; i < kMaxSlots; ++i) {
    if (segment_->slot(i).state.load() != 0 && IsSlotAlive(i)) ++s.slots_attached;
  }
  s.channels = h.channels_used;
  s.groups = h.groups_used;
  s.members = h.members_used > h.fans_used ? h.members_used - h.fans_used : 0;
  s.queued = segment_->node_records() - h.free_nodes;
  s.nodes_free = segment_->node_limit() - s.queued;  // how many more may queue (records grow)
  s.arena_bytes = uint64_t{segment_->page_count()} * kPageSize;
  s.arena_used_bytes = uint64_t{h.used_pages} * kPageSize;
  s.segment_bytes = h.segment_size;
  s.shm_bytes = segment_->ShmBytes();
  s.messages_sent = h.messages_sent;
  s.messages_received = h.messages_received;
  s.messages_expired = h.messages_expired;
  s.messages_damaged = h.messages_damaged;
  s.deliveries_skipped_full = h.deliveries_skipped_full;
  s.sends_refused_full = h.sends_refused_full;
  s.messages_orphaned = h.messages_orphaned;
  s.lock_recoveries = h.lock.recoveries.load();
  s.ring_failures = doorbells_ ? doorbells_->ring_failures() : 0;
  return s;
}

std::vector<ChannelInfo> Layer::ListChannels(uint32_t limit) {
  CheckOpen();
  Critical guard(*this);
  return ListInUse<ChannelInfo>(
      segment_->channel_records(), limit,
      [&](uint32_t i) -> const Channel& { return segment_->channel(i); },
      [](const Channel& c, std::string name) {
        // A '!' channel's messages wait in its instance's inbox: its depth is theirs.
        return ChannelInfo{std::move(name), c.count + c.inbox_refs, c.memberships};
      });
}

std::vector<GroupInfo> Layer::ListGroups(uint32_t limit) {
  CheckOpen();
  Critical guard(*this);
  return ListInUse<GroupInfo>(
      segment_->group_records(), limit,
      [&](uint32_t i) -> const Group& { return segment_->group(i); },
      [](const Group& g, std::string name) {
        return GroupInfo{std::move(name), g.member_count};
      });
}

SegmentConfig Layer::Config() const {
  SegmentConfig c = options_.segment;
  c.size = segment_->size();
  c.max_channels = segment_->channel_limit();
  c.max_groups = segment_->group_limit();
  c.max_members = segment_->member_limit();
  c.max_nodes = segment_->node_limit();
  c.max_message_size = segment_->max_message_size();
  return c;
}

}  // namespace shmch
