#!/usr/bin/env bash
# Run a command with the local services up, and always take them down afterwards:
#   deploy/local/with-services.sh python3 -m pytest
# Exits with the command's status (or services.sh's, if the services could not start).
set -euo pipefail

SERVICES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/services.sh"
[ $# -gt 0 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }

# Installed before `up`, so a half-started set (e.g. Redis up, Kafka failed) is cleaned up too.
# `down` must not change the exit status we report.
# SIGPIPE is ignored there so that `... | head` closing our stdout cannot kill the cleanup.
trap 'trap "" PIPE; bash "$SERVICES" down || true' EXIT
# Ctrl-C, closed terminal, CI cancellation: exit (which runs the EXIT trap) with the usual status.
trap 'exit 130' INT
trap 'exit 129' HUP
trap 'exit 143' TERM

bash "$SERVICES" up
rc=0
"$@" || rc=$?
exit "$rc"
