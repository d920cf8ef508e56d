#!/usr/bin/env bash
# Runs the deployment checks (their own Go module, so the product's go.mod
# never pulls kustomize or Helm). -count=1: the tests read files outside the
# module (deployments/) and run podman, which Go's test cache cannot see.
# Extra arguments go to `go test` (e.g. -run Helm -v).
set -euo pipefail
cd "$(dirname "$0")"
exec go test -count=1 "$@" ./...
