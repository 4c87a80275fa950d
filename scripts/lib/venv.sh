# Creates (or reuses) the Python virtual environment holding the external
# test clients, and exports VERN_TEST_PYTHON.

ensure_venv() {
    local root="$1"
    local venv="$root/target/test-venv"
    local req="$root/tests/python/requirements.txt"
    local stamp="$venv/.requirements.sha256"
    local want
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "Creating the Python test environment in $venv" >&2
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
        echo "$want" >"$stamp"
    fi
    export VERN_TEST_PYTHON="$venv/bin/python"
}
