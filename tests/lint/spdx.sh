#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every tracked source file, script, CMake file and Python file carries the line
# "SPDX-License-Identifier: MIT" (LICENSE) at its top: line 1, or line 2 after a
# "#!" line. Checked in CI (ctest -L lint).
#   tests/lint/spdx.sh         list the files without it; exit 1 if there are any
#   tests/lint/spdx.sh --fix   insert it where it is missing ("//" or "#" comment)
# Exit 77 (skipped) outside a git checkout: the tracked files are the ones checked.
set -euo pipefail
cd "$(dirname "$0")/../.."

fix=0
case "${1:-}" in
  --fix) fix=1 ;;
  "") ;;
  *) echo "spdx.sh: unknown argument '$1' (--fix or nothing)" >&2; exit 2 ;;
esac
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || { echo "spdx.sh: not a git checkout, skipped"; exit 77; }

tag="SPDX-License-Identifier: MIT"

# The comment leader for a file that needs the line, or nothing if it does not.
leader() {
  local f=$1
  case "$f" in
    *.cpp|*.hpp|*.h|*.c|*.cu|*.cuh|*.hpp.in) echo "//"; return ;;
    CMakeLists.txt|*/CMakeLists.txt|*.cmake|*.cmake.in|*.pc.in|*.sh|*.py|Dockerfile|*/Dockerfile) echo "#"; return ;;
  esac
  [[ $(head -c 2 "$f") == "#!" ]] && echo "#"
  return 0
}

missing=()
while IFS= read -r f; do
  [[ -f $f ]] || continue  # deleted in the work tree, not yet committed
  lead=$(leader "$f")
  [[ -n $lead ]] || continue
  first=1
  [[ $(head -c 2 "$f") == "#!" ]] && first=2
  head -n "$first" "$f" | grep -qF "$tag" && continue
  missing+=("$f")
  if ((fix)); then
    if ((first == 2)); then
      sed -i "1a $lead $tag" "$f"
    else
      sed -i "1i $lead $tag" "$f"
    fi
  fi
done < <(git ls-files)

if ((${#missing[@]} == 0)); then
  echo "spdx.sh: every source file has '$tag'"
  exit 0
fi
if ((fix)); then
  printf 'spdx.sh: added to %s\n' "${missing[@]}"
  exit 0
fi
echo "spdx.sh: no '$tag' at the top of:" >&2
printf '  %s\n' "${missing[@]}" >&2
echo "spdx.sh: run tests/lint/spdx.sh --fix" >&2
exit 1
