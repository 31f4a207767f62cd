// SPDX-License-Identifier: MIT
// epcomm — what libepcomm.so exports.
//
// The library is compiled with hidden visibility: only declarations marked
// EPCOMM_API (the classes and functions of these public headers) enter its dynamic
// symbol table, so callers cannot bind to internals (detail::, the codec kernels)
// and the loader resolves fewer symbols. Marking a class exports its members,
// vtable and type_info, which a catch of epcomm::Error in the caller needs.
#pragma once

#define EPCOMM_API __attribute__((visibility("default")))
