# Sourced by scripts/demo and scripts/test: creates (or reuses) the virtual environment and
# installs slidesam with every extra. Re-installs only when pyproject.toml changed.
# The sam2 extra's package is an sdist: built first, without build isolation (which would install a
# second torch just to build it) and without its CUDA extension (optional, unused by slidesam).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SLIDESAM_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtual environment $VENV"
    python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
STAMP="$VENV/.slidesam-installed"
WANTED="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANTED" ]; then
    echo "installing slidesam[server,bridge,dev,sam2,ray] into $VENV (first time: a few minutes)"
    LOG="$VENV/install.log"
    SAM2_REQUIREMENT="$(python -c 'import sys, tomllib
extra = tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["sam2"]
print(next(r for r in extra if r.startswith("sam2")))' "$ROOT/pyproject.toml")"
    if ! { python -m pip install --upgrade pip "setuptools>=77" wheel \
            && SAM2_BUILD_CUDA=0 python -m pip install --no-build-isolation --no-deps "$SAM2_REQUIREMENT" \
            && python -m pip install -e "$ROOT[server,bridge,dev,sam2,ray]"; } > "$LOG" 2>&1; then
        tail -40 "$LOG"
        echo "installation failed; the whole log is in $LOG" >&2
        exit 1
    fi
    echo "$WANTED" > "$STAMP"
fi
cd "$ROOT"
