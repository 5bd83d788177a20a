#!/usr/bin/env bash
# Checks protos/ for breaking changes against the previous commit on main.
# v1 is additive only: removing or renumbering a field fails here.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
if ! git rev-parse --verify --quiet main~1 >/dev/null; then
  echo "buf breaking: main has no previous commit to compare with; skipped"
  exit 0
fi
if ! git cat-file -e main~1:protos/rectune/v1 2>/dev/null; then
  echo "buf breaking: main~1 has no protos/rectune/v1 yet; nothing to break"
  exit 0
fi
buf breaking --against '.git#branch=main,ref=HEAD~1'
echo "buf breaking: no breaking change against main~1"
