# SPDX-License-Identifier: MIT
"""Adapters that give epcomm the interface of other expert-parallel libraries."""
