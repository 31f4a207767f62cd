// SPDX-License-Identifier: MIT
// One-way RDMA write bandwidth of the verbs transport between ranks 0 and 1: rank
// 0 keeps `window` writes with immediate in flight to rank 1, which only polls;
// the clock stops when the last write is acknowledged (its bytes are then in
// rank 1's memory).
//   mpirun -np 2 verbs_write_bw [size_bytes ...]
#include <mpi.h>

#include <epcomm/error.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <vector>

#include "common/cli.hpp"
#include "transport/verbs/immediate.hpp"
#include "transport/verbs/verbs_transport.hpp"
#include "verbs/poll_until.hpp"

namespace {

using epcomm::detail::Completion;
using epcomm::detail::VerbsTransport;

constexpr uint32_t kWindow = 64;
constexpr double kTimeoutS = 60;

// Enough writes to move ~64 MiB (the guest moves ~40 MB/s), at most 4000.
int iterations_for(std::size_t size) {
  return static_cast<int>(std::clamp<std::size_t>((64u << 20) / std::max<std::size_t>(size, 1), 16, 4000));
}

void run(VerbsTransport& t, int region, std::size_t size, int iters, bool print) {
  const int rank = t.rank();
  std::vector<Completion> got;
  MPI_Barrier(MPI_COMM_WORLD);
  const auto start = std::chrono::steady_clock::now();
  if (rank == 0) {
    int posted = 0, acked = 0;
    while (acked < iters) {
      while (posted < iters && posted - acked < static_cast<int>(kWindow)) {
        t.write(1, region, 0, region, 0, size, epcomm::detail::encode_immediate(posted, 0, 0), posted);
        ++posted;
      }
      got.clear();
      epcomm_test::poll_until(t, got, [&] { return !got.empty(); }, kTimeoutS);
      for (const Completion& c : got) acked += c.kind == Completion::Kind::kWrite;
    }
  } else if (rank == 1) {
    epcomm_test::poll_until(t, got, [&] { return t.receives_completed(0) == iters; }, kTimeoutS);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (print) {
    const double bytes = static_cast<double>(size) * iters;
    std::printf("%10zu %6d %10.1f %9.3f %10.1f\n", size, iters, bytes / s / 1e6, bytes * 8 / s / 1e9, s / iters * 1e6);
    std::fflush(stdout);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  // The receive counter is cumulative: the next size starts from a fresh transport.
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0, rc = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<std::size_t> sizes{4096, 65536, 1 << 20, 8 << 20, 32 << 20};
  CLI::App app("One-way RDMA write bandwidth of the verbs transport, rank 0 to rank 1.", "verbs_write_bw");
  app.add_option("size_bytes", sizes, "bytes per write, one measurement each")
      ->check(epcomm_bench::at_least<std::size_t>(1))
      ->capture_default_str();
  if (const std::optional<int> status = epcomm_bench::parse_command_line(app, argc, argv, rank == 0)) {
    MPI_Finalize();
    return *status;
  }
  try {
    if (size < 2) throw epcomm::Error(epcomm::ErrorCode::kInvalidArgument, "verbs_write_bw needs 2 ranks");
    if (rank == 0) std::printf("%10s %6s %10s %9s %10s\n", "bytes", "iters", "MB/s", "Gbit/s", "us/write");
    for (std::size_t bytes : sizes) {
      VerbsTransport t(MPI_COMM_WORLD, VerbsTransport::Options{kWindow, kWindow, {}});
      std::vector<std::byte> buf(bytes);
      const int region = t.register_region(buf.data(), buf.size());
      t.connect();
      run(t, region, bytes, iterations_for(bytes), rank == 0);
    }
  } catch (const epcomm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    rc = 1;
  }
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}
