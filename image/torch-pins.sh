#!/bin/sh
# Prints "name==version" for each package name given, as torch's own resolution pinned it
# (/build/torch-pins.txt, written in the Dockerfile from `pip install --dry-run --report`).
# A name torch does not require is an error, so a layer can never install an unpinned wheel.
set -eu
pins="${TORCH_PINS:-/build/torch-pins.txt}"
[ -r "$pins" ] || { echo "torch-pins: $pins is missing" >&2; exit 1; }
[ "$#" -gt 0 ] || { echo "torch-pins: no package names given" >&2; exit 1; }
for name in "$@"; do
  line="$(grep -i -m1 -- "^${name}==" "$pins" || true)"
  [ -n "$line" ] || { echo "torch-pins: torch does not require $name" >&2; exit 1; }
  echo "$line"
done
