// SPDX-License-Identifier: MIT
// How one rank's failure reaches every rank of an exchange within a progress round.
//
// Two paths, both read at the start of every progress round and every begin:
// - a control message over the exchange's communicator (a tag of its own, one
//   receive from any source always posted) that a rank sends every other rank when
//   it fails ("abort") or when it rejects a begin call ("rejected"), and
// - the failing rank's record in its shared-memory header, which its node peers
//   read without waiting for MPI.
// A begin whose input check fails takes nothing (no slot, no sequence number, no
// message) and leaves the exchange usable only if every rank rejected that same
// begin. Each rank therefore compares a peer's rejection with what it itself did at
// the same position of its sequence of begin calls: rejected too (consistent), or
// began an operation there (the operation cannot complete: the group fails).
#pragma once

#include <mpi.h>

#include <compare>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace epcomm::detail {

// Where a rank stands in its sequence of begin calls: the sequence number the next
// operation takes and how many begins were rejected so far. A begin at position p
// either takes p.seq (then seq + 1) or is rejected (then rejections + 1), so the
// positions a rank passes through grow in lexicographic order.
struct BeginPosition {
  uint64_t seq = 1;
  uint64_t rejections = 0;
  auto operator<=>(const BeginPosition&) const = default;
};

// The failure record at the start of each rank's node segment. The writer fills
// origin and message, then publishes failed_seq (release); readers load failed_seq
// (acquire) first.
struct FailureRecord {
  alignas(64) uint64_t failed_seq;  // the operation this rank abandoned (0: healthy)
  int32_t origin;                    // the rank whose error failed the group
  char message[1024];                // that error, NUL-terminated (truncated)
};

// A failure learned from a peer: its origin and message; `rejected_at` is set when
// the peer rejected a begin that this rank turned into an operation.
struct PeerFailure {
  int origin;
  std::string message;
  std::optional<BeginPosition> rejected_at;
};

class FailureChannel {
 public:
  // comm: the exchange's communicator (ranks are group ranks). exchange_id (agreed by all
  // ranks) tells this exchange's messages from those of a freed predecessor whose
  // communicator MPI reused.
  // records: the failure record of every rank of this node, by local rank.
  // tag: the exchange's tag for failure messages, used by nothing else.
  FailureChannel(MPI_Comm comm, int tag, int rank, int size, uint64_t exchange_id,
                 std::vector<FailureRecord*> records, int local_rank);
  ~FailureChannel();
  FailureChannel(const FailureChannel&) = delete;
  FailureChannel& operator=(const FailureChannel&) = delete;

  // Publishes this rank's failure (caused by `origin`'s error) in shared memory and,
  // if `tell_all`, sends it to every other rank.
  void raise(int origin, uint64_t seq, const std::string& message, bool tell_all);
  // Announces to every rank that the begin at `at` was rejected here.
  void reject(BeginPosition at, const std::string& message);
  // What arrived since the last call: a node peer's failure record, an abort, or a
  // peer's rejection of a begin this rank already made as an operation (this rank
  // is at `now`). Never blocks.
  std::optional<PeerFailure> poll(BeginPosition now);

 private:
  struct Message;
  struct Outgoing;
  struct Notice {
    int origin;
    BeginPosition at;
    std::string text;
  };
  void send_to_all(const Message& m);
  void post_receive();

  MPI_Comm comm_;
  int tag_;
  int rank_, size_, local_rank_;
  uint64_t exchange_id_;
  std::vector<FailureRecord*> records_;
  MPI_Request recv_ = MPI_REQUEST_NULL;
  std::unique_ptr<Message> incoming_;
  std::deque<Outgoing> outgoing_;
  std::vector<Notice> notices_;             // peers' rejections not yet matched
  std::set<BeginPosition> my_rejections_;  // positions this rank rejected
  std::optional<PeerFailure> abort_;       // the first abort received
};

}  // namespace epcomm::detail
