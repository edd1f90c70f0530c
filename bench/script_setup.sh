# Sourced by the bench scripts, not run: strict mode; $build, the build
# folder as an absolute path (the script's first argument, relative to where
# it was started, or the repository's build/); the repository root as the
# working directory; and a scratch folder $work, removed on exit.
set -euo pipefail
build=$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")/../build}" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
