# SPDX-License-Identifier: MIT
"""epcomm: expert-parallel (MoE) token dispatch and combine over MPI.

The tensor API lives in :mod:`epcomm.torch` and is re-exported here::

    import epcomm
    buf = epcomm.Buffer(None, num_experts=64, hidden=1024, max_tokens_per_rank=512, topk=6)
    res = buf.dispatch(x, topk_idx, topk_weights)
    out = buf.combine(experts(res.x), res.handle)

:mod:`epcomm.compat.deep_ep` offers DeepEP's normal-mode interface on top.
See docs/python.md.
"""

from epcomm._epcomm import Error  # noqa: F401  (RuntimeError subclass; .code names the ErrorCode)

from epcomm.torch import (  # noqa: F401
    Buffer,
    DispatchResult,
    Handle,
    Work,
    count_expert_load,
    route,
    update_expert_bias,
)

__all__ = [
    "Buffer",
    "DispatchResult",
    "Error",
    "Handle",
    "Work",
    "count_expert_load",
    "route",
    "update_expert_bias",
]
