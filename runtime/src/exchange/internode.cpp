#include "exchange/internode.hpp"

#include <string>
#include <vector>

#include "exchange/engine.hpp"
#include "exchange/mpi_internode.hpp"
#include "util/check.hpp"
#include "util/log.hpp"
#ifdef EPCOMM_WITH_VERBS
#include "exchange/verbs_internode.hpp"
#endif

namespace epcomm::detail {
namespace {

using Transport = GroupOptions::Transport;

#ifdef EPCOMM_WITH_VERBS
// Every rank tries to open a port and register its buffers; then all learn who
// could, so they all take the same transport (or all fail) together.
std::unique_ptr<InterNode> open_verbs(Engine& e, Transport want) {
  MPI_Comm rail = MPI_COMM_NULL;
  EPCOMM_MPI(MPI_Comm_split(e.comm, e.group.local_rank, e.group.node, &rail));
  std::unique_ptr<VerbsInterNode> verbs;
  std::string why;
  try {
    verbs = std::make_unique<VerbsInterNode>(e, rail);
  } catch (const Error& err) {
    why = err.what();
    MPI_Comm_free(&rail);
  }
  const int ok = verbs != nullptr;
  std::vector<int> all(e.group.size);
  EPCOMM_MPI(MPI_Allgather(&ok, 1, MPI_INT, all.data(), 1, MPI_INT, e.comm));
  std::string without;
  for (int r = 0; r < e.group.size; ++r) {
    if (!all[r]) without += (without.empty() ? "" : ", ") + std::to_string(r);
  }
  if (without.empty()) {
    verbs->connect();
    return verbs;
  }
  if (want == Transport::kVerbs) {
    if (!ok) throw Error(ErrorCode::kUnsupported, why + " (EPCOMM_TRANSPORT=verbs)");
    EPCOMM_FAIL(kUnsupported, "EPCOMM_TRANSPORT=verbs but ranks " << without
                                                                 << " have no usable verbs port (see their errors)");
  }
  EPCOMM_LOG(kInfo, "exchange: transport auto: ranks " << without << " have no usable verbs port"
                                                       << (ok ? "" : " (this one: " + why + ")") << "; using mpi");
  return nullptr;
}
#endif

}  // namespace

std::unique_ptr<InterNode> make_internode(Engine& e) {
  const Transport want = e.group.transport;
  // One node, or no tokens: nothing ever crosses the inter-node tier.
  if (want != Transport::kMpi && e.topo.num_nodes() > 1 && e.config.max_tokens_per_rank > 0) {
#ifdef EPCOMM_WITH_VERBS
    if (auto verbs = open_verbs(e, want)) return verbs;
#else
    EPCOMM_REQUIRE(want != Transport::kVerbs, kUnsupported,
                   "EPCOMM_TRANSPORT=verbs but this build has no verbs transport (libibverbs was not found, or "
                   "EPCOMM_WITH_VERBS=OFF)");
#endif
  }
  return std::make_unique<MpiInterNode>(e);
}

}  // namespace epcomm::detail
