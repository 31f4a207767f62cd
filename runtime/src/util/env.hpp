// Every EPCOMM_* environment knob, declared in one place with its default.
#pragma once

#include <string>

namespace epcomm::env {

// EPCOMM_RANKS_PER_NODE: split each host into emulated nodes of this many ranks.
int ranks_per_node();        // 0 when unset
// EPCOMM_TIMEOUT_S: seconds before a silent peer is reported (default 60).
double timeout_s();
// EPCOMM_PROGRESS_THREAD: 1 = background progress thread (default), 0 = inline.
bool progress_thread();
// EPCOMM_PROGRESS_CORE: core to pin the progress thread to; -1 when unset.
int progress_core();
// EPCOMM_LOG_LEVEL: error|warn|info|debug|trace (default warn).
std::string log_level();

// Parsing helpers, throwing Error(kInvalidArgument) naming the variable and value.
int get_int(const char* name, int fallback, int min_value);
double get_double(const char* name, double fallback, double min_value);

}  // namespace epcomm::env
