// SPDX-License-Identifier: MIT
#include "exchange/internode_factory.hpp"

#include <string>
#include <vector>

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
// Every rank tries to open a port and register its regions, then to connect and
// reach its rail peers; after each step all ranks learn who failed, so they all
// take the same transport (or all throw) together and nobody waits in a
// collective for a rank that gave up.
std::unique_ptr<InterNode> open_verbs(const InterNodeSetup& setup, Transport want,
                                      const std::function<void(InterNode&)>& register_regions) {
  const GroupState& g = setup.group;
  MPI_Comm rail = MPI_COMM_NULL;
  EPCOMM_MPI(MPI_Comm_split(setup.comm, g.local_rank, g.node, &rail));
  std::unique_ptr<VerbsInterNode> verbs;
  std::string why;
  try {
    verbs = std::make_unique<VerbsInterNode>(setup, rail);
  } catch (const std::exception& err) {
    why = err.what();
    MPI_Comm_free(&rail);
  }
  if (verbs) {
    try {
      register_regions(*verbs);
    } catch (const std::exception& err) {
      why = err.what();
      verbs.reset();  // frees the rail communicator it owns
    }
  }
  std::string failed = ranks_that_failed(setup.comm, why.empty());
  if (failed.empty()) {
    try {
      verbs->connect();  // collective over the rail; throws on every rail member together
    } catch (const std::exception& err) {
      why = err.what();
      verbs.reset();
    }
    failed = ranks_that_failed(setup.comm, why.empty());
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

std::unique_ptr<InterNode> make_internode(const InterNodeSetup& setup,
                                          const std::function<void(InterNode&)>& register_regions) {
  const Transport want = setup.group.transport;
  if (want != Transport::kMpi && setup.carries_traffic) {  // else nothing ever crosses: no port
#ifdef EPCOMM_WITH_VERBS
    if (auto verbs = open_verbs(setup, want, register_regions)) return verbs;
#else
    EPCOMM_REQUIRE(want != Transport::kVerbs, kUnsupported,
                   "transport verbs requested (GroupOptions::transport or EPCOMM_TRANSPORT) but this build has no "
                   "verbs transport (libibverbs or hwloc was not found, or EPCOMM_WITH_VERBS=OFF)");
#endif
  }
  auto mpi = std::make_unique<MpiInterNode>(setup);
  register_regions(*mpi);
  return mpi;
}

}  // namespace epcomm::detail
