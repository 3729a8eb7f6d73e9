#!/usr/bin/env bash
# Proves, without Docker, that a Dockerfile's build context is complete: stages exactly the files
# the Dockerfile COPYs from the repository root (honouring its <Dockerfile>.dockerignore, else
# /.dockerignore, as BuildKit and the CDK asset do) into a temporary directory, then builds the
# worker there the way the image's build stage does, offline, reusing the repository's compiled
# dependencies. The examples' Dockerfiles compile sluice-worker the same way.
#
#   cdk/scripts/docker-context-check.sh [Dockerfile]   (default worker/Dockerfile; relative to the
#                                                      repository root; needs `make cdk-deps`)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
stage="$(mktemp -d "${TMPDIR:-/tmp}/sluice-docker-context.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

dockerfile="${1:-worker/Dockerfile}"
case "$dockerfile" in /*) ;; *) dockerfile="$repo/$dockerfile" ;; esac
build_dir="$(cd "$repo/cdk" && node --import tsx scripts/stage-docker-context.ts "$repo" "$dockerfile" "$stage")"
echo "docker-context-check: building ${dockerfile#"$repo/"} in the staged context ($stage/root/$build_dir)" >&2
(cd "$stage/root/$build_dir" && find . -type f | sort | sed 's|^\./|  |' >&2)

cd "$stage/root/$build_dir"
CARGO_TARGET_DIR="$repo/target" cargo build --offline --locked -p sluice-worker
echo "docker-context-check: ok, the build context is complete" >&2
