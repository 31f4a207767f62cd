// SPDX-License-Identifier: MIT
// epcomm — expert-parallel token exchange. Umbrella header.
#pragma once

#include <epcomm/error.hpp>
#include <epcomm/exchange.hpp>
#include <epcomm/group.hpp>
#include <epcomm/low_latency.hpp>
#include <epcomm/overlap.hpp>
#include <epcomm/routing.hpp>
#include <epcomm/types.hpp>
#include <epcomm/version.hpp>
