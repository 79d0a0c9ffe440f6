# Sourced by scripts/demo and scripts/test: creates (or reuses) the virtual environment and
# installs slidesam with every extra. Re-installs only when pyproject.toml changed.
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
    echo "installing slidesam[server,bridge,dev] into $VENV (first time: a few minutes)"
    LOG="$VENV/install.log"
    if ! { python -m pip install --upgrade pip && python -m pip install -e "$ROOT[server,bridge,dev]"; } > "$LOG" 2>&1; then
        tail -40 "$LOG"
        echo "installation failed; the whole log is in $LOG" >&2
        exit 1
    fi
    echo "$WANTED" > "$STAMP"
fi
cd "$ROOT"
