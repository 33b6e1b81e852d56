#!/usr/bin/env bash
# setup_aarch64_runtime.sh DIR -- an emulated aarch64 Python 3.11 that imports TVM 0.27's runtime:
# what `pwbench fleet local` runs its emulated aarch64 board in (pwbench's board server under
# qemu-user), and what the `cross` tests run aarch64 kernels in.
#
# Builds, idempotently:
#   DIR/sysroot/   Debian bookworm arm64 packages (python3.11 + the libs it and TVM need),
#                  extracted with dpkg-deb -x (nothing is installed on the host)
#   DIR/site/      the aarch64 manylinux wheels (apache-tvm, apache-tvm-ffi, numpy, psutil,
#                  cloudpickle, tornado + their deps) unzipped; ml_dtypes left out by default
#                  (AARCH64_ML_DTYPES=1 keeps it: needed only for bfloat16/float8 numpy arrays,
#                  and it is 2/3 of `import tvm` under qemu). TVM's compiler library (229 MB) is
#                  dropped too: a board only runs kernels built here (AARCH64_FULL_TVM=1 keeps it)
#   DIR/bin/python-aarch64   wrapper: qemu-aarch64 -L DIR/sysroot DIR/sysroot/usr/bin/python3.11
# Downloads go to a cache ($AARCH64_CACHE, default DIR/cache) and are reused when present, so a
# second DIR with the same cache needs no network. Host tools (qemu-user, gcc-aarch64-linux-gnu)
# are apt-installed when missing, and arm64 is added as a dpkg foreign architecture (to let
# apt-get download arm64 packages; nothing arm64 is installed): root, or sudo, is needed then.
# Every step leaves a stamp; rerunning is a no-op (0.5 s). Cold: ~16 s here, most of it unpacking.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

DIR=${1:?usage: setup_aarch64_runtime.sh DIR}
mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)
CACHE=${AARCH64_CACHE:-$DIR/cache}
mkdir -p "$CACHE/wheels" "$CACHE/debs" "$DIR/bin"
PIP=${PIP:-python3 -m pip}                       # any pip works: it only downloads
PY311=${PY311:-python3}                          # writes the .pyc files: must be a CPython 3.11
FULL=${AARCH64_FULL_TVM:-0}
TVM_PIN=${TVM_PIN:-apache-tvm==0.27.0.post1}
FFI_PIN=${FFI_PIN:-apache-tvm-ffi==0.1.14.post1}  # 0.1.15 segfaults MetaSchedule
NUMPY_PIN=${NUMPY_PIN:-numpy==2.4.6}
t0=$(date +%s.%N)
say() { printf '[setup_aarch64 %6.1fs] %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{print a-b}')" "$*"; }

# 1. host tools --------------------------------------------------------------------------------
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    say "apt-get install qemu-user gcc-aarch64-linux-gnu"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user gcc-aarch64-linux-gnu >/dev/null
fi

# 2. arm64 .debs (cache) -----------------------------------------------------------------------
DEBS="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libstdc++6
      libexpat1 zlib1g libssl3 libffi8 libbz2-1.0 liblzma5 libuuid1 libcrypt1"
if [ ! -e "$CACHE/debs/.done" ]; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        say "dpkg --add-architecture arm64"
        $SUDO dpkg --add-architecture arm64
        $SUDO apt-get update -qq
    elif ! apt-cache show python3.11-minimal:arm64 >/dev/null 2>&1; then
        $SUDO apt-get update -qq
    fi
    say "apt-get download (arm64)"
    (cd "$CACHE/debs" && apt-get -o APT::Sandbox::User=root download -qq \
        $(for p in $DEBS; do echo "$p:arm64"; done))
    touch "$CACHE/debs/.done"
fi

# 3. aarch64 wheels (cache) --------------------------------------------------------------------
if [ ! -e "$CACHE/wheels/.done" ]; then
    say "pip download aarch64 wheels"
    $PIP download -q --only-binary=:all: --platform manylinux_2_28_aarch64 \
        --python-version 3.11 --implementation cp --abi cp311 -d "$CACHE/wheels" \
        "$TVM_PIN" "$FFI_PIN" "$NUMPY_PIN" psutil cloudpickle tornado 2>&1 | grep -v "is ignored: it is neither" || true
    ls "$CACHE"/wheels/apache_tvm-*.whl "$CACHE"/wheels/apache_tvm_ffi-*.whl >/dev/null
    touch "$CACHE/wheels/.done"
fi

# 4. sysroot -----------------------------------------------------------------------------------
if [ ! -e "$DIR/sysroot/.done" ]; then
    say "dpkg-deb -x into sysroot"
    rm -rf "$DIR/sysroot"; mkdir -p "$DIR/sysroot"
    for d in "$CACHE"/debs/*.deb; do dpkg-deb -x "$d" "$DIR/sysroot"; done
    # Debian ships no .pyc (postinst makes them); the host's CPython 3.11 writes the same format.
    say "compileall stdlib (host python3.11)"
    if $PY311 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        $PY311 -m compileall -q -j0 "$DIR/sysroot/usr/lib/python3.11" >/dev/null 2>&1 || true
    fi
    touch "$DIR/sysroot/.done"
fi

# 5. site-packages -----------------------------------------------------------------------------
if [ -e "$DIR/site/.done" ] && [ "$(cat "$DIR/site/.full_tvm" 2>/dev/null)" != "$FULL" ]; then
    rm -f "$DIR/site/.done"  # made with the other AARCH64_FULL_TVM: unpack again
fi
if [ ! -e "$DIR/site/.done" ]; then
    say "unzip wheels into site"
    rm -rf "$DIR/site"; mkdir -p "$DIR/site"
    for w in "$CACHE"/wheels/*.whl; do
        # ml_dtypes (bfloat16/float8 numpy types, optional for TVM) takes ~2/3 of `import tvm`
        # under qemu (6 of 9 s); left out unless AARCH64_ML_DTYPES=1. Changing it: rm -rf DIR/site
        case "$(basename "$w")" in ml_dtypes-*) [ "${AARCH64_ML_DTYPES:-0}" = 1 ] || continue;; esac
        python3 -m zipfile -e "$w" "$DIR/site"
    done
    if [ "$FULL" != 1 ]; then  # a board runs kernels built elsewhere: TVM's runtime is enough
        rm -f "$DIR"/site/tvm/lib/libtvm_compiler.so "$DIR"/site/tvm/libtvm_compiler.so
        rm -rf "$DIR"/site/tvm/3rdparty "$DIR"/site/tvm/src "$DIR"/site/tvm/include
    fi
    say "compileall site (host python3.11)"
    if $PY311 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        $PY311 -m compileall -q -j0 "$DIR/site" >/dev/null 2>&1 || true
    fi
    echo "$FULL" > "$DIR/site/.full_tvm"
    touch "$DIR/site/.done"
fi

# 6. wrapper -----------------------------------------------------------------------------------
# Without binfmt_misc an emulated process cannot exec an aarch64 binary (ENOEXEC), but it can
# exec a host shell script. TVM's RPC server starts `sys.executable -m tvm.exec.popen_worker`, so
# sys.executable must be this wrapper: sitecustomize.py sets it from AARCH64_PY_WRAPPER.
cat > "$DIR/site/sitecustomize.py" <<'EOF'
import os, sys
_w = os.environ.get("AARCH64_PY_WRAPPER")
if _w:
    sys.executable = _w
EOF
cat > "$DIR/bin/python-aarch64" <<EOF
#!/bin/sh
# aarch64 CPython 3.11 under qemu-user with the aarch64 TVM wheel on its path.
# Set TVM_USE_RUNTIME_LIB=1 for a runtime-only import (faster; no compiler, no MetaSchedule).
# Only its own site-packages: this machine's (x86) packages on PYTHONPATH would break it.
export PYTHONPATH="$DIR/site"
export PYTHONNOUSERSITE=1
$( [ "$FULL" = 1 ] || echo 'export TVM_USE_RUNTIME_LIB=1  # TVM compiler library dropped: runtime only' )
export AARCH64_PY_WRAPPER="$DIR/bin/python-aarch64"
exec qemu-aarch64 -L "$DIR/sysroot" "$DIR/sysroot/usr/bin/python3.11" "\$@"
EOF
chmod +x "$DIR/bin/python-aarch64"

say "check"
test -d "$DIR/site/tvm" -a -d "$DIR/site/tvm_ffi"
"$DIR/bin/python-aarch64" -c 'import platform, tvm; print("aarch64 python ok:", platform.machine(), platform.python_version(), "tvm", tvm.__version__)'
say "done: $DIR/bin/python-aarch64 ($(du -sh "$DIR/sysroot" | cut -f1) sysroot, $(du -sh "$DIR/site" | cut -f1) site, cache $(du -sh "$CACHE" | cut -f1))"
