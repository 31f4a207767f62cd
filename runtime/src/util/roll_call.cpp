// SPDX-License-Identifier: MIT
#include "util/roll_call.hpp"

#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "util/check.hpp"

namespace epcomm::detail {
namespace {

using Clock = std::chrono::steady_clock;

// One round: sends `out` (attempt number first) to every rank and receives one
// message of the same size from every rank into `in`, dropping messages of other
// attempts. Returns the ranks that did not answer by the deadline (empty: all did).
std::string round_trip(MPI_Comm comm, int tag, const std::vector<std::byte>& out, std::vector<std::byte>& in,
                       uint64_t attempt, Clock::time_point deadline, bool* left_messages) {
  int rank = 0, size = 0;
  EPCOMM_MPI(MPI_Comm_rank(comm, &rank));
  EPCOMM_MPI(MPI_Comm_size(comm, &size));
  const int n = static_cast<int>(out.size());
  std::vector<MPI_Request> recvs(size, MPI_REQUEST_NULL), sends;
  // On the heap: if a send to an absent rank never completes, its buffer must stay.
  auto* payload = new std::vector<std::byte>(out);
  std::vector<char> arrived(size, 0);
  arrived[rank] = 1;
  std::memcpy(in.data() + static_cast<std::size_t>(rank) * n, out.data(), n);
  for (int p = 0; p < size; ++p) {
    if (p == rank) continue;
    EPCOMM_MPI(MPI_Irecv(in.data() + static_cast<std::size_t>(p) * n, n, MPI_BYTE, p, tag, comm, &recvs[p]));
    MPI_Request s;
    EPCOMM_MPI(MPI_Isend(payload->data(), n, MPI_BYTE, p, tag, comm, &s));
    sends.push_back(s);
  }
  int missing = size - 1;
  while (missing > 0 && Clock::now() < deadline) {
    for (int p = 0; p < size; ++p) {
      if (arrived[p]) continue;
      int done = 0;
      EPCOMM_MPI(MPI_Test(&recvs[p], &done, MPI_STATUS_IGNORE));
      if (!done) continue;
      uint64_t theirs = 0;
      std::memcpy(&theirs, in.data() + static_cast<std::size_t>(p) * n, sizeof theirs);
      if (theirs != attempt) {  // left over from an attempt that timed out
        EPCOMM_MPI(MPI_Irecv(in.data() + static_cast<std::size_t>(p) * n, n, MPI_BYTE, p, tag, comm, &recvs[p]));
        continue;
      }
      arrived[p] = 1;
      --missing;
    }
    if (missing > 0) std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  std::string absent;
  for (int p = 0; p < size; ++p) {
    if (arrived[p]) continue;
    absent += (absent.empty() ? "" : ", ") + std::to_string(p);
    MPI_Cancel(&recvs[p]);
    MPI_Wait(&recvs[p], MPI_STATUS_IGNORE);
  }
  // Sends to absent ranks cannot be taken back: they stay queued for them, with
  // their buffer (deliberately not freed then).
  int sent = 0;
  EPCOMM_MPI(MPI_Testall(static_cast<int>(sends.size()), sends.data(), &sent, MPI_STATUSES_IGNORE));
  if (sent) {
    delete payload;
  } else {
    for (MPI_Request& s : sends) {
      if (s != MPI_REQUEST_NULL) MPI_Request_free(&s);
    }
  }
  if (!absent.empty()) *left_messages = true;
  return absent;
}

}  // namespace

bool wait_within(MPI_Request& req, double timeout_s) { return wait_within(req, timeout_s, [] {}); }

bool wait_within(MPI_Request& req, double timeout_s, const std::function<void()>& check) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  for (int done = 0;;) {
    EPCOMM_MPI(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
    if (done) return true;
    if (Clock::now() > deadline) return false;
    check();
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

std::vector<std::byte> roll_call(MPI_Comm comm, int tag, const void* mine, std::size_t bytes, uint64_t attempt,
                                 double timeout_s, const char* step, bool* left_messages) {
  int size = 0;
  EPCOMM_MPI(MPI_Comm_size(comm, &size));
  const Clock::time_point deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
  const std::size_t n = sizeof attempt + bytes;
  std::vector<std::byte> out(n), in(n * size);
  std::memcpy(out.data(), &attempt, sizeof attempt);
  std::memcpy(out.data() + sizeof attempt, mine, bytes);
  std::string absent = round_trip(comm, tag, out, in, attempt, deadline, left_messages);
  EPCOMM_REQUIRE(absent.empty(), kTimeout,
                 "timed out after " << timeout_s << " s in phase 'setup' (" << step << "): ranks " << absent
                                    << " did not arrive");
  std::vector<std::byte> ready(sizeof attempt), readies(sizeof attempt * size);
  std::memcpy(ready.data(), &attempt, sizeof attempt);
  absent = round_trip(comm, tag + 1, ready, readies, attempt, deadline, left_messages);
  EPCOMM_REQUIRE(absent.empty(), kTimeout,
                 "timed out after " << timeout_s << " s in phase 'setup' (" << step << "): ranks " << absent
                                    << " gave up before every rank had arrived (this rank came late, or they did)");
  std::vector<std::byte> records(bytes * size);
  for (int r = 0; r < size; ++r) {
    std::memcpy(records.data() + bytes * r, in.data() + n * r + sizeof attempt, bytes);
  }
  return records;
}

}  // namespace epcomm::detail
