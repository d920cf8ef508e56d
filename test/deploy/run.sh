#!/usr/bin/env bash
# Runs the deployment checks. They are a Go module of their own, so the
# product's go.mod never pulls kustomize or Helm.
#  -count=1    the tests read files outside the module (deployments/) and run
#              podman, which Go's test cache cannot see.
#  -mod=mod    this module replaces the product with ../..; when the product's
#              go.mod raises a shared dependency, go may raise it here too
#              instead of stopping (`go mod tidy` here keeps the file current).
# Extra arguments go to `go test` (e.g. -run Helm -v).
set -euo pipefail
cd "$(dirname "$0")"
exec go test -mod=mod -count=1 "$@" ./...
