#!/usr/bin/env bash
# A Jetson proxy on an x86_64 machine: jetson-mamba in Debian arm64 userlands run by qemu-user (binfmt_misc).
#   bullseye: glibc 2.31 (= JetPack 5's Ubuntu 20.04), Python 3.9, torch 2.8.0 (the last with cp39 aarch64 wheels)
#   bookworm: glibc 2.36 (~ JetPack 6's 2.35),          Python 3.11, torch 2.9.1
#
#   scripts/arm64-proxy.sh check               can this machine run it? (exit 77 + one line on stderr if not)
#   scripts/arm64-proxy.sh SUITE prepare       build or reuse the cached root, its torch venv and the upstream wheels
#   scripts/arm64-proxy.sh SUITE SCENARIO      doctor | select | patch | verify (tests/arm64/scenarios.py):
#                                              builds this checkout's wheel, installs it into a fresh venv in the
#                                              root (on top of the cached torch venv) and prints the scenario's JSON
#
# Needs: root (debootstrap, mount, chroot), binfmt_misc (mounted and qemu-aarch64 registered here when missing),
# qemu-user-static and debootstrap (apt-get installs them when missing), the Debian archive and the pip index
# for the first build of a root. Everything heavy runs natively, only the scenarios run under emulation: the
# root is debootstrap's first stage plus dpkg-deb -x (~0.5 min), its venv is filled by the host's pip with
# aarch64 wheels (~2-3 min), mamba-ssm/causal-conv1d wheels are built on the host from ../shared (~1 min).
# The roots are cached outside the clone, in $JETSON_MAMBA_ARM64_CACHE (default /var/cache/jetson-mamba/arm64),
# so every clone and CI run on this machine reuses them; delete a suite's folder to rebuild it.
# Environment: JETSON_MAMBA_ARM64_MIRROR (debootstrap's mirror; default: debootstrap's own),
# JETSON_MAMBA_ARM64_TORCH (torch version in the root's venv), JETSON_MAMBA_SHARED (../shared),
# JETSON_MAMBA_ARM64_TIMEOUT (seconds for one scenario, default 1500), JETSON_MAMBA_ARM64_BINFMT (where
# binfmt_misc is or gets mounted, default /proc/sys/fs/binfmt_misc).
# The root's pip (the patch scenario installs wheels with it) is configured like the host's: /etc/pip.conf,
# its CA bundle, /etc/resolv.conf and the PIP_INDEX_URL-style variables are carried in; ~/.config/pip is not
# (it names local folders of x86_64 wheels).
# Exit status: 0 ok; 77 this machine cannot run arm64 roots (why, and the fix, on stderr); 124 a step timed
# out; anything else a step failed (its log tail on stderr). Scenario JSON on stdout, progress on stderr.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${JETSON_MAMBA_ARM64_CACHE:-/var/cache/jetson-mamba/arm64}
SHARED=${JETSON_MAMBA_SHARED:-$(dirname "$REPO")/shared}
SCENARIO_TIMEOUT=${JETSON_MAMBA_ARM64_TIMEOUT:-1500}
ROOT_FORMAT=2                      # bump when the root's layout changes: cached roots are rebuilt
VENV=/opt/jetson-mamba/venv        # inside the root: torch and the runtime dependencies, cached
MNT=/mnt/jetson-mamba              # inside the root: this checkout, ../shared and the upstream wheels, read-only
START=$SECONDS

say() { echo "arm64-proxy [$((SECONDS - START))s]: $*" >&2; }
unusable() { echo "arm64-proxy: cannot run arm64 roots here: $*" >&2; exit 77; }
die() { echo "arm64-proxy: $1" >&2; exit "${2:-1}"; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2  # the header above
    exit 2
}

# --- prerequisites -------------------------------------------------------------------------------------
BINFMT=${JETSON_MAMBA_ARM64_BINFMT:-/proc/sys/fs/binfmt_misc}

check_host() {
    [ "$(uname -s)" = Linux ] || unusable "needs Linux (binfmt_misc), this is $(uname -s)"
    [ "$(id -u)" = 0 ] || unusable "needs root (debootstrap, mount, chroot); fix: run it as root or with sudo"
    for tool in chroot mount umount mountpoint flock timeout findmnt; do
        command -v "$tool" >/dev/null || unusable "$tool is missing; fix: apt-get install util-linux coreutils"
    done
    if ! command -v debootstrap >/dev/null || ! [ -e /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
        command -v apt-get >/dev/null || unusable "qemu-user-static and debootstrap are missing and there is no apt-get"
        say "installing qemu-user-static and debootstrap with apt-get"
        { timeout 600 apt-get update -q && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q \
            qemu-user-static debootstrap; } >"/tmp/arm64-proxy-apt.log" 2>&1 ||
            unusable "apt-get install qemu-user-static debootstrap failed (see /tmp/arm64-proxy-apt.log)"
    fi
    if ! mountpoint -q "$BINFMT"; then
        timeout 20 mount binfmt_misc -t binfmt_misc "$BINFMT" 2>/dev/null ||
            unusable "cannot mount binfmt_misc on $BINFMT (a container without that privilege?); fix: run on a host" \
                     "or a privileged container, or mount it there: mount binfmt_misc -t binfmt_misc $BINFMT"
    fi
    if ! [ -e "$BINFMT/qemu-aarch64" ]; then
        timeout 20 sh -c "cat /usr/lib/binfmt.d/qemu-aarch64.conf > $BINFMT/register" 2>/dev/null ||
            unusable "cannot register qemu-aarch64 with binfmt_misc; fix: as root," \
                     "cat /usr/lib/binfmt.d/qemu-aarch64.conf > $BINFMT/register"
    fi
    grep -qx enabled "$BINFMT/qemu-aarch64" ||
        unusable "qemu-aarch64 is registered but disabled; fix: echo 1 > $BINFMT/qemu-aarch64"
    if command -v arch-test >/dev/null; then  # debootstrap's companion: runs tiny arm64 programs
        timeout 60 arch-test arm64 >/dev/null 2>&1 ||
            unusable "arm64 programs do not run under binfmt_misc/qemu here (arch-test arm64 failed)"
    fi
}

# The registered interpreter must be reachable inside the root: with the F flag the kernel opened it at
# registration; without it the root needs its own copy at the same path.
ensure_interpreter() {
    local root=$1 interpreter
    grep -q '^flags:.*F' "$BINFMT/qemu-aarch64" && return 0
    interpreter=$(sed -n 's/^interpreter //p' "$BINFMT/qemu-aarch64")
    install -D -m 755 "$(readlink -f "$interpreter")" "$root$interpreter"
}

# --- the cached root -------------------------------------------------------------------------------------
torch_for() {
    case $1 in
        bullseye) echo "${JETSON_MAMBA_ARM64_TORCH:-2.8.0}" ;;
        *) echo "${JETSON_MAMBA_ARM64_TORCH:-2.9.1}" ;;
    esac
}

# Never delete through a mount point: a half-built root may still have /proc or /dev mounted in it.
remove_tree() {
    local tree=$1
    [ -e "$tree" ] || return 0
    unmount_under "$tree"
    if findmnt -rn -o TARGET | grep -q "^$tree/"; then
        die "$tree still has mounts in it; unmount them and remove it by hand"
    fi
    rm -rf --one-file-system "$tree"
}

unmount_under() {
    local prefix=$1 target
    # deepest first
    { findmnt -rn -o TARGET | grep "^$prefix/" || true; } | sort -r | while read -r target; do
        timeout 30 umount -R "$target" 2>/dev/null || timeout 30 umount -R -l "$target" 2>/dev/null || true
    done
}

# Stale mounts and run folders of a killed run (the lock is held: nothing else uses the root now).
clear_stale() {
    unmount_under "$ROOT"
    if findmnt -rn -o TARGET | grep -q "^$ROOT/"; then
        die "$ROOT still has mounts from an earlier run in it; unmount them (umount -R -l) and run it again"
    fi
    rm -rf --one-file-system "$ROOT"/tmp/jetson-mamba-run.*
}

# Native, no emulation: debootstrap's first stage downloads and unpacks the packages, dpkg-deb -x unpacks the
# rest. The second stage (dpkg configuring every package under qemu: ~4 min for bookworm, ~20 min on a loaded
# machine) is skipped: Python needs the files, not the maintainer scripts (passwd and group come from
# base-passwd's master copies, which is what its postinst does).
ensure_root() {
    local suite=$1 dir=$CACHE/$1 partial deb
    ROOT=$dir/root
    if [ -f "$ROOT/etc/jetson-mamba-proxy" ] && [ "$(cat "$ROOT/etc/jetson-mamba-proxy")" = "$ROOT_FORMAT $suite" ]; then
        clear_stale
        return 0
    fi
    partial=$dir/root.partial
    remove_tree "$ROOT"
    remove_tree "$partial"
    say "building the $suite arm64 root in $dir (natively: debootstrap --foreign + dpkg-deb -x; log: $dir/debootstrap.log)"
    # shellcheck disable=SC2086  # the mirror is optional
    timeout -k 30 1800 nice -n 10 debootstrap --foreign --arch=arm64 --variant=minbase \
        --include=python3,python3-venv "$suite" "$partial" ${JETSON_MAMBA_ARM64_MIRROR:-} \
        >"$dir/debootstrap.log" 2>&1 || {
        local code=$?
        tail -n 15 "$dir/debootstrap.log" >&2
        remove_tree "$partial"
        die "debootstrap --foreign of $suite failed (exit $code); log: $dir/debootstrap.log" "$code"
    }
    for deb in "$partial"/var/cache/apt/archives/*.deb; do
        dpkg-deb -x "$deb" "$partial" || die "dpkg-deb -x $deb failed"
    done
    rm -rf --one-file-system "$partial/debootstrap" "$partial"/var/cache/apt/archives/*.deb
    cp "$partial/usr/share/base-passwd/passwd.master" "$partial/etc/passwd"
    cp "$partial/usr/share/base-passwd/group.master" "$partial/etc/group"
    echo "$ROOT_FORMAT $suite" >"$partial/etc/jetson-mamba-proxy"
    mv "$partial" "$ROOT"
    say "root ready: Debian $(cat "$ROOT/etc/debian_version") ($suite)"
}

# Host configuration the root's pip needs, copied at every run (the host's may change).
configure_root() {
    local cert
    rm -f "$ROOT/etc/resolv.conf"
    cat /etc/resolv.conf >"$ROOT/etc/resolv.conf"
    rm -f "$ROOT/etc/pip.conf"
    [ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOT/etc/pip.conf"
    for cert in $(sed -n 's/^[[:space:]]*cert[[:space:]]*=[[:space:]]*//p' /etc/pip.conf 2>/dev/null) \
                "${PIP_CERT:-}" /etc/ssl/certs/ca-certificates.crt; do
        [ -n "$cert" ] && [ -f "$cert" ] && install -D -m 644 "$(readlink -f "$cert")" "$ROOT$cert"
    done
    ensure_interpreter "$ROOT"
}

MOUNTED=()
mount_root() {
    mount -t proc proc "$ROOT/proc"; MOUNTED+=("$ROOT/proc")
    mount --rbind /sys "$ROOT/sys"; mount --make-rslave "$ROOT/sys"; MOUNTED+=("$ROOT/sys")
    mount --rbind /dev "$ROOT/dev"; mount --make-rslave "$ROOT/dev"; MOUNTED+=("$ROOT/dev")
    local name source
    for name in repo shared wheels; do
        case $name in repo) source=$REPO ;; shared) source=$SHARED ;; *) source=$CACHE/wheels ;; esac
        [ -d "$source" ] || continue
        mkdir -p "$ROOT$MNT/$name"
        mount --bind "$source" "$ROOT$MNT/$name"; MOUNTED+=("$ROOT$MNT/$name")
        mount -o remount,bind,ro "$ROOT$MNT/$name"
    done
}

RUN_DIR=
cleanup() {
    local index
    for ((index = ${#MOUNTED[@]} - 1; index >= 0; index--)); do
        timeout 30 umount -R "${MOUNTED[index]}" 2>/dev/null || timeout 30 umount -R -l "${MOUNTED[index]}" || true
    done
    MOUNTED=()
    if [ -n "$RUN_DIR" ] && ! findmnt -rn -o TARGET | grep -q "^$ROOT/"; then
        rm -rf --one-file-system "$RUN_DIR"
    fi
}

# Run a command inside the root with a clean environment (plus the host's pip settings), under a time limit.
in_root() {
    local limit=$1; shift
    local pass=() name
    for name in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT PIP_CERT \
                http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        [ -n "${!name:-}" ] && pass+=("$name=${!name}")
    done
    timeout -k 30 "$limit" nice -n 10 chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONDONTWRITEBYTECODE=1 \
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "${pass[@]}" "$@"
}

# A host interpreter of the root's Python version, if this machine has one (PATH or pyenv): the pip that
# fills the root's venv byte-compiles with it, so the root never compiles torch's sources under emulation.
host_python() {
    local version=$1 candidate
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python"$version" \
                     "$(command -v "python$version" || true)"; do
        [ -x "$candidate" ] && timeout 60 "$candidate" -m pip --version >/dev/null 2>&1 &&
            { echo "$candidate"; return 0; }
    done
    return 0
}

# The cached venv: torch (aarch64 CPU build), jetson-mamba's dependencies, mamba-ssm's runtime needs and pip.
# The root's python makes the venv (seconds); the host's pip fills it natively with aarch64 wheels for the
# root's Python and glibc (--platform/--python-version), which is what pip inside the root would pick but
# without pip itself running under qemu (that took 30-45 min per root). torch goes in with --no-deps: its
# metadata's CUDA dependencies are marked platform_machine == "x86_64", which the host's pip would evaluate
# for the host. Rebuilt when the list changes.
ensure_venv() {
    local suite=$1 requirements facts python_version glibc minor site host compile platforms=()
    requirements="torch==$(torch_for "$suite") filelock typing-extensions sympy networkx jinja2 fsspec numpy einops"
    requirements+=" pyyaml transformers packaging rich setuptools wheel pip"
    if [ -f "$ROOT$VENV/.requirements" ] && [ "$(cat "$ROOT$VENV/.requirements")" = "$requirements" ]; then
        return 0
    fi
    rm -rf --one-file-system "$ROOT$VENV"
    in_root 600 /usr/bin/python3 -m venv --without-pip "$VENV" >&2
    facts=$(in_root 300 "$VENV/bin/python" -c \
        'import os, sys; print("%d.%d" % sys.version_info[:2], os.confstr("CS_GNU_LIBC_VERSION").split()[1])')
    read -r python_version glibc <<<"$facts"
    site=$ROOT$VENV/lib/python$python_version/site-packages
    for ((minor = ${glibc#*.}; minor >= 17; minor--)); do platforms+=(--platform "manylinux_2_${minor}_aarch64"); done
    platforms+=(--platform manylinux2014_aarch64 --platform linux_aarch64 --only-binary=:all:
                --python-version "$python_version" --implementation cp --target "$site" --upgrade)
    host=$(host_python "$python_version")
    compile=()
    if [ -z "$host" ]; then  # any host pip will do; the root compiles the sources itself (minutes)
        host=${JETSON_MAMBA_PYTHON:-$REPO/.venv/bin/python}
        [ -x "$host" ] || host=python3
        compile=(--no-compile)
    fi
    say "filling $VENV in the $suite root (Python $python_version, glibc $glibc) with the host's pip ($host)"
    # shellcheck disable=SC2086  # lists of requirements
    { timeout -k 30 1800 nice -n 10 "$host" -m pip install -q "${compile[@]}" "${platforms[@]}" --no-deps \
          "torch==$(torch_for "$suite")" &&
      timeout -k 30 1800 nice -n 10 "$host" -m pip install -q "${compile[@]}" "${platforms[@]}" \
          ${requirements#torch==* } ; } >"$CACHE/$suite/pip.log" 2>&1 ||
        { tail -n 15 "$CACHE/$suite/pip.log" >&2; die "the host's pip could not fill the $suite venv (log: $CACHE/$suite/pip.log)"; }
    rm -rf --one-file-system "$site/bin"  # console scripts with the host's interpreter in their #! line
    if [ ${#compile[@]} -gt 0 ]; then
        say "no host Python $python_version here: byte-compiling the venv in the root (under emulation: minutes)"
        in_root 3000 "$VENV/bin/python" -m compileall -q -j 0 "${site#"$ROOT"}" >/dev/null ||
            die "byte-compiling the $suite venv failed or timed out (exit $?)"
    fi
    echo "$requirements" >"$ROOT$VENV/.requirements"
    say "venv ready: Python $python_version, $(cd "$site" && echo torch-*.dist-info)"
}

# mamba-ssm and causal-conv1d wheels built natively from ../shared's sources without compiling (their
# setup.py imports torch: under emulation each pip install of an sdist took ~3.5 min), cached per source.
# The patch scenario installs them with pip inside the root.
ensure_upstream_wheels() {
    local source out python
    python=${JETSON_MAMBA_PYTHON:-$REPO/.venv/bin/python}
    [ -x "$python" ] || python=python3
    mkdir -p "$CACHE/wheels"
    exec 8>"$CACHE/wheels.lock"  # shared by both suites
    flock -w 1800 8 || die "another arm64-proxy run has held $CACHE/wheels.lock for 30 min" 124
    for source in "$SHARED"/sdists/mamba_ssm-2.2.4.tar.gz "$SHARED"/sdists/mamba_ssm-2.3.2.post1.tar.gz \
                  "$SHARED"/upstream/mamba-main-e9594ce.tar.gz "$SHARED"/sdists/causal_conv1d-1.6.0.tar.gz \
                  "$SHARED"/sdists/causal_conv1d-1.7.0.tar.gz; do
        [ -f "$source" ] || die "$source is missing (../shared's sdists and upstream snapshot)"
        out=$CACHE/wheels/$(basename "$source" .tar.gz)
        compgen -G "$out/*.whl" >/dev/null && continue
        say "building a wheel of $(basename "$source") without compiling (host)"
        rm -rf "$out.partial"
        MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE \
            CAUSAL_CONV1D_FORCE_BUILD=TRUE timeout 900 nice -n 10 "$python" -m pip wheel -q --no-deps \
            --no-build-isolation --no-index -w "$out.partial" "$source" >"$CACHE/wheels/build.log" 2>&1 ||
            { tail -n 15 "$CACHE/wheels/build.log" >&2; die "building a wheel of $source failed"; }
        mv "$out.partial" "$out"
    done
    exec 8>&-  # the scenario that follows (minutes) must not hold the other suite's runs back
}

# This checkout's wheel (uncommitted changes included), built on the host: it is pure Python.
build_wheel() {
    local out=$1 source python
    python=${JETSON_MAMBA_PYTHON:-$REPO/.venv/bin/python}
    [ -x "$python" ] || python=python3
    source=$(mktemp -d)
    cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/src" "$source/"
    timeout 600 "$python" -m pip wheel -q --no-deps --no-build-isolation --no-index -w "$out" "$source" >&2 ||
        { rm -rf "$source"; die "building the jetson-mamba wheel failed"; }
    rm -rf "$source"
}

run_scenario() {
    local suite=$1 scenario=$2 inside site wheel
    RUN_DIR=$(mktemp -d -p "$ROOT/tmp" jetson-mamba-run.XXXXXX)
    inside=${RUN_DIR#"$ROOT"}
    build_wheel "$RUN_DIR"
    wheel=$(cd "$RUN_DIR" && echo jetson_mamba-*.whl)
    [ -f "$RUN_DIR/$wheel" ] || die "no jetson-mamba wheel was built in $RUN_DIR"
    mount_root
    site=$(in_root 300 "$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # A fresh venv per run that sees the cached one's packages (torch): what a run installs or patches goes
    # into it and is thrown away with it.
    in_root 300 "$VENV/bin/python" -m venv --without-pip "$inside/venv" >&2
    echo "import site; site.addsitedir('$site')" >"$RUN_DIR/venv/lib/$(basename "$(dirname "$site")")/site-packages/_jetson_mamba_base.pth"
    in_root 600 "$inside/venv/bin/python" -m pip install -q --no-deps --no-index "$inside/$wheel" >&2
    say "running scenario $scenario on $suite"
    mkdir -p "$RUN_DIR/tmp"
    in_root "$SCENARIO_TIMEOUT" /usr/bin/env PATH="$inside/venv/bin:/usr/bin:/bin" TMPDIR="$inside/tmp" \
        JETSON_MAMBA_REPO="$MNT/repo" JETSON_MAMBA_SHARED="$MNT/shared" JETSON_MAMBA_ARM64_WHEELS="$MNT/wheels" \
        "$inside/venv/bin/python" "$MNT/repo/tests/arm64/scenarios.py" "$scenario"
}

main() {
    [ $# -ge 1 ] || usage
    if [ "$1" = check ]; then
        check_host
        echo "arm64-proxy: this machine can run arm64 roots (cache: $CACHE)" >&2
        return 0
    fi
    [ $# -eq 2 ] || usage
    local suite=$1 action=$2
    case $suite in bullseye | bookworm) ;; *) die "unknown suite $suite (bullseye or bookworm)" 2 ;; esac
    case $action in prepare | doctor | select | patch | verify) ;; *) die "unknown scenario $action" 2 ;; esac
    check_host
    mkdir -p "$CACHE/$suite"
    # One run per root at a time (runs mount into it and share its venv); a build can take half an hour.
    exec 9>"$CACHE/$suite.lock"
    flock -w 3600 9 || die "another arm64-proxy run has held $CACHE/$suite.lock for an hour" 124
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    ensure_root "$suite"
    configure_root
    timeout 120 chroot "$ROOT" /bin/true ||
        unusable "arm64 programs do not run in $ROOT (binfmt_misc/qemu-aarch64); check $BINFMT/qemu-aarch64"
    mount_root
    ensure_venv "$suite"
    cleanup
    case $action in prepare | patch) ensure_upstream_wheels ;; esac
    [ "$action" = prepare ] && { say "$suite ready"; return 0; }
    run_scenario "$suite" "$action"
}

main "$@"
