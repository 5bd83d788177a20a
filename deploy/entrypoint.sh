#!/bin/sh
# Container entry point: `rectune SERVICE [FLAGS...]` runs `python -m services.SERVICE FLAGS...`;
# `rectune tuner COMMAND [FLAGS...]` runs the tuner's command line (`python -m tuner`);
# `rectune dashboard [FLAGS...]` serves the operators' web page (`python -m operators dashboard`).
set -eu
usage() { echo "usage: rectune {embedding|scoring|policy|metrics|tuner|dashboard} [flags]   (flags: rectune SERVICE --help)"; }
if [ $# -eq 0 ]; then usage >&2; exit 2; fi
service=$1; shift
case "$service" in
  embedding|scoring|policy|metrics) exec python -m "services.$service" "$@" ;;
  tuner) exec python -m tuner "$@" ;;
  dashboard) exec python -m operators dashboard "$@" ;;
  --help|-h|help) usage; exit 0 ;;
  *) echo "rectune: unknown service '$service'" >&2; usage >&2; exit 2 ;;
esac
