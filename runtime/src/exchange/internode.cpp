// SPDX-License-Identifier: MIT
#include "exchange/internode.hpp"

#include <string>
#include <vector>

#include "exchange/engine.hpp"
#include "exchange/mpi_internode.hpp"
#include "util/agree.hpp"
#include "util/check.hpp"
#include "util/log.hpp"
#ifdef EPCOMM_WITH_VERBS
#include "exchange/verbs_internode.hpp"
#endif

namespace epcomm::detail {
namespace {

using Transport = GroupOptions::Transport;

#ifdef EPCOMM_WITH_VERBS
// Every rank tries to open a port and register its buffers, then to connect and
// reach its rail peers; after each step all ranks learn who failed, so they all
// take the same transport (or all throw) together and nobody waits in a
// collective for a rank that gave up.
std::unique_ptr<InterNode> open_verbs(Engine& e, Transport want) {
  MPI_Comm rail = MPI_COMM_NULL;
  EPCOMM_MPI(MPI_Comm_split(e.comm, e.group.local_rank, e.group.node, &rail));
  std::unique_ptr<VerbsInterNode> verbs;
  std::string why;
  try {
    verbs = std::make_unique<VerbsInterNode>(e, rail);
  } catch (const std::exception& err) {
    why = err.what();
    MPI_Comm_free(&rail);
  }
  std::string failed = ranks_that_failed(e.comm, why.empty());
  if (failed.empty()) {
    try {
      verbs->connect();  // collective over the rail; throws on every rail member together
    } catch (const std::exception& err) {
      why = err.what();
      verbs.reset();
    }
    failed = ranks_that_failed(e.comm, why.empty());
  }
  if (failed.empty()) return verbs;
  if (want == Transport::kVerbs) {
    if (!why.empty()) throw Error(ErrorCode::kUnsupported, why + " (transport verbs requested)");
    EPCOMM_FAIL(kUnsupported, "transport verbs requested (GroupOptions::transport or EPCOMM_TRANSPORT) but ranks "
                                  << failed << " cannot use it (see their errors)");
  }
  EPCOMM_LOG(kInfo, "exchange: transport auto: ranks " << failed << " cannot use verbs"
                                                       << (why.empty() ? "" : " (" + why + ")")
                                                       << "; using mpi");
  return nullptr;
}
#endif

}  // namespace

std::unique_ptr<InterNode> make_internode(Engine& e) {
  const Transport want = e.group.transport;
  // Checksums are checked where MPI delivers a block; RDMA writes have no such place
  // yet.
  if (e.config.checksum) {
    EPCOMM_REQUIRE(want != Transport::kVerbs, kUnsupported,
                   "ExchangeConfig::checksum (EPCOMM_CHECKSUM) is served by the MPI transport only, but verbs was "
                   "requested (GroupOptions::transport or EPCOMM_TRANSPORT)");
    return std::make_unique<MpiInterNode>(e);
  }
  // One node, or no tokens: nothing ever crosses the inter-node tier.
  if (want != Transport::kMpi && e.topo.num_nodes() > 1 && e.config.max_tokens_per_rank > 0) {
#ifdef EPCOMM_WITH_VERBS
    if (auto verbs = open_verbs(e, want)) return verbs;
#else
    EPCOMM_REQUIRE(want != Transport::kVerbs, kUnsupported,
                   "transport verbs requested (GroupOptions::transport or EPCOMM_TRANSPORT) but this build has no "
                   "verbs transport (libibverbs or hwloc was not found, or EPCOMM_WITH_VERBS=OFF)");
#endif
  }
  return std::make_unique<MpiInterNode>(e);
}

}  // namespace epcomm::detail
