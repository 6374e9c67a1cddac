#!/usr/bin/env bash
# Schemathesis for `cargo xtask openapi-fuzz`, from PyPI into a virtual environment outside the
# repository, pinned by xtask/openapi-fuzz/requirements.txt (Schemathesis and everything it pulls
# in). A later run with the same pins reuses the environment; changed pins install afresh.
#
# Usage:
#   scripts/schemathesis.sh install   install if missing or outdated; print the path of `st`
#   scripts/schemathesis.sh path      print the path of `st` where `install` puts it
#
# Environment:
#   FLOCK_SCHEMATHESIS_CACHE  where environments live
#                             (default: ${XDG_CACHE_HOME:-~/.cache}/flock-schemathesis)
#
# `cargo xtask openapi-fuzz` looks for `st` in FLOCK_SCHEMATHESIS, else where `install` puts it.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=xtask/openapi-fuzz/requirements.txt
version=$(sed -n 's/^schemathesis==//p' "$requirements")
[ -n "$version" ] || { echo "schemathesis.sh: $requirements pins no schemathesis" >&2; exit 1; }
cache=${FLOCK_SCHEMATHESIS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flock-schemathesis}
venv=$cache/venv-$version
st=$venv/bin/st
# The pins the environment was installed from; `cargo xtask openapi-fuzz` compares them too.
marker=$venv/flock-requirements.txt

say() { echo "schemathesis.sh: $*" >&2; }

install() {
    if [ -x "$st" ] && cmp -s "$requirements" "$marker"; then
        echo "$st"
        return
    fi
    command -v python3 >/dev/null 2>&1 || { say "python3 is needed (3.9 or later)"; exit 1; }
    say "installing Schemathesis $version and its pinned dependencies into $venv"
    mkdir -p "$cache"
    # One installer at a time per cache; two worktrees or CI runs wait for each other.
    exec 9>"$cache/.lock"
    flock -w 900 9 || { say "another process held $cache/.lock for too long"; exit 1; }
    if [ -x "$st" ] && cmp -s "$requirements" "$marker"; then
        echo "$st"
        return
    fi
    rm -rf "$venv"
    python3 -m venv "$venv" ||
        { say "python3 -m venv failed (on Debian: apt-get install python3-venv)"; exit 1; }
    timeout 900 "$venv/bin/pip" install --quiet --disable-pip-version-check --timeout 60 \
        --no-input -r "$requirements" >&2 ||
        { say "could not install $requirements from PyPI into $venv"; exit 1; }
    "$st" --version >/dev/null || { say "$st does not run"; exit 1; }
    cp "$requirements" "$marker"
    echo "$st"
}

case ${1:-} in
install) install ;;
path) echo "$st" ;;
*)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
