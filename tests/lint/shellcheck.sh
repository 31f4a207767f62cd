#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs shellcheck (Debian package shellcheck) over every tracked shell script: *.sh and
# the files whose #! line names a shell. Checked in CI (ctest -L lint); sourced
# files are followed (-x) from the repository root.
# Exit 77 (skipped) without shellcheck or outside a git checkout.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v shellcheck >/dev/null || { echo "shellcheck.sh: shellcheck not installed (launch/setup.sh --dev), skipped"; exit 77; }
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || { echo "shellcheck.sh: not a git checkout, skipped"; exit 77; }

scripts=()
while IFS= read -r f; do
  [[ -f $f ]] || continue
  case "$f" in
    *.sh) scripts+=("$f") ;;
    *) head -n 1 "$f" | grep -Eq '^#!.*[/ ](ba|da|k)?sh( |$)' && scripts+=("$f") ;;
  esac
done < <(git ls-files)

echo "shellcheck.sh: ${#scripts[@]} scripts"
shellcheck -x "${scripts[@]}"
