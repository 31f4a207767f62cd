// SPDX-License-Identifier: MIT
#include "exchange/failure_channel.hpp"

#include <algorithm>
#include <cstring>

#include "exchange/slot_layout.hpp"
#include "util/check.hpp"

namespace epcomm::detail {

// One fixed-size control message: every receive can take any of them.
struct FailureChannel::Message {
  enum Type : int32_t { kAbort = 1, kRejected = 2 };
  int32_t type;
  int32_t origin;  // abort: the rank whose error failed the group; rejected: the sender
  uint64_t exchange_id;
  uint64_t seq, rejections;  // abort: the operation; rejected: the position
  char text[480];
};

// A message being sent to every other rank, with its requests.
struct FailureChannel::Outgoing {
  Message message;
  std::vector<MPI_Request> requests;
};

namespace {

void copy_text(const std::string& from, char* to, std::size_t capacity) {
  const std::size_t n = std::min(from.size(), capacity - 1);
  std::memcpy(to, from.data(), n);
  to[n] = '\0';
}

std::string read_text(const char* from, std::size_t capacity) { return std::string(from, strnlen(from, capacity)); }

}  // namespace

FailureChannel::FailureChannel(MPI_Comm comm, int tag, int rank, int size, uint64_t exchange_id,
                               std::vector<FailureRecord*> records, int local_rank)
    : comm_(comm),
      tag_(tag),
      rank_(rank),
      size_(size),
      local_rank_(local_rank),
      exchange_id_(exchange_id),
      records_(std::move(records)),
      incoming_(std::make_unique<Message>()) {
  post_receive();
}

FailureChannel::~FailureChannel() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  // A posted receive that matched nothing can always be cancelled; sends are left
  // to complete on their own (they are small, so eager, in practice done).
  if (recv_ != MPI_REQUEST_NULL) {
    MPI_Cancel(&recv_);
    MPI_Wait(&recv_, MPI_STATUS_IGNORE);
  }
  for (Outgoing& o : outgoing_) {
    for (MPI_Request& r : o.requests) {
      if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
    }
  }
}

void FailureChannel::post_receive() {
  EPCOMM_MPI(MPI_Irecv(incoming_.get(), sizeof(Message), MPI_BYTE, MPI_ANY_SOURCE, tag_, comm_, &recv_));
}

void FailureChannel::send_to_all(const Message& m) {
  Outgoing& o = outgoing_.emplace_back();
  o.message = m;
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    MPI_Request req;
    EPCOMM_MPI(MPI_Isend(&o.message, sizeof(Message), MPI_BYTE, r, tag_, comm_, &req));
    o.requests.push_back(req);
  }
}

void FailureChannel::raise(int origin, uint64_t seq, const std::string& message, bool tell_all) {
  FailureRecord& mine = *records_[local_rank_];
  if (load_flag(mine.failed_seq) == 0) {
    mine.origin = origin;
    copy_text(message, mine.message, sizeof mine.message);
    store_flag(mine.failed_seq, std::max<uint64_t>(seq, 1));
  }
  if (!tell_all) return;
  Message m{};
  m.type = Message::kAbort;
  m.origin = origin;
  m.exchange_id = exchange_id_;
  m.seq = seq;
  copy_text(message, m.text, sizeof m.text);
  send_to_all(m);
}

void FailureChannel::reject(BeginPosition at, const std::string& message) {
  my_rejections_.insert(at);
  Message m{};
  m.type = Message::kRejected;
  m.origin = rank_;
  m.exchange_id = exchange_id_;
  m.seq = at.seq;
  m.rejections = at.rejections;
  copy_text(message, m.text, sizeof m.text);
  send_to_all(m);
}

std::optional<PeerFailure> FailureChannel::poll(BeginPosition now) {
  // Node peers first: their record is there before any message could be.
  for (int ld = 0; ld < static_cast<int>(records_.size()); ++ld) {
    if (ld == local_rank_) continue;
    FailureRecord& r = *records_[ld];
    if (load_flag(r.failed_seq) != 0) return PeerFailure{r.origin, read_text(r.message, sizeof r.message), {}};
  }
  for (;;) {
    int arrived = 0;
    MPI_Status status;
    EPCOMM_MPI(MPI_Test(&recv_, &arrived, &status));
    if (!arrived) break;
    const Message& m = *incoming_;
    if (m.exchange_id == exchange_id_) {
      const std::string text = read_text(m.text, sizeof m.text);
      if (m.type == Message::kAbort && !abort_) {
        abort_ = PeerFailure{m.origin, text, {}};
      } else if (m.type == Message::kRejected) {
        notices_.push_back(Notice{m.origin, BeginPosition{m.seq, m.rejections}, text});
      }
    }
    post_receive();
  }
  while (!outgoing_.empty()) {
    int sent = 0;
    std::vector<MPI_Request>& reqs = outgoing_.front().requests;
    EPCOMM_MPI(MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &sent, MPI_STATUSES_IGNORE));
    if (!sent) break;
    outgoing_.pop_front();
  }
  if (abort_) return abort_;
  // A peer's rejection is consistent if this rank rejected the same begin, pending
  // while this rank has not reached it, and fatal once this rank passed it.
  for (auto it = notices_.begin(); it != notices_.end();) {
    if (my_rejections_.count(it->at)) {
      it = notices_.erase(it);
    } else if (it->at < now) {
      return PeerFailure{it->origin, it->text, it->at};
    } else {
      ++it;
    }
  }
  return std::nullopt;
}

}  // namespace epcomm::detail
