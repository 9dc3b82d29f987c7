#!/usr/bin/env bash
# Installs what building and testing v4.cpp needs on Debian 12, and nothing when all is there.
# Idempotent: the no-op path is one dpkg-query call (well under a second). The Makefile runs it
# before `make`, `make run`, `make test` and `make bench`.
#
#   scripts/setup.sh [--build] [--test] [--vulkan] [--check] [--quiet]
#     --build   packages needed to build the runtime and its native tests (default: --test)
#     --test    --build + the ARM cross toolchain and qemu + Python test tooling (make test)
#     --vulkan  also the Vulkan SDK pieces for -DV4_VULKAN=ON
#     --check   install nothing; list what is missing and exit 1 if anything is
#     --quiet   print nothing when nothing is missing
#
# Without root (and without passwordless sudo) it installs nothing: it names the missing packages,
# prints the command to install them, and exits 1.
#
# Python test tooling: requirements go in tests/requirements.txt (none yet). When that file lists
# any, --test installs them into a virtual environment at build/venv (never system-wide, never at
# build time of the runtime); tests find its interpreter at build/venv/bin/python.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Build: compilers, CMake + Ninja + ccache, the runtime's libraries, GoogleTest/Benchmark.
BUILD_PKGS=(cmake ninja-build g++ make pkg-config ccache
            libzstd-dev libxxhash-dev libpcre2-dev nlohmann-json3-dev libcli11-dev
            libgtest-dev libgmock-dev libbenchmark-dev)
# ARM: NEON kernels are cross-built and their tests run under qemu-user (make test).
ARM_PKGS=(g++-aarch64-linux-gnu qemu-user)
# Vulkan (only for -DV4_VULKAN=ON; the backend is planned).
VULKAN_PKGS=(libvulkan-dev glslc mesa-vulkan-drivers spirv-tools)

REQS="$ROOT/tests/requirements.txt"
VENV="$ROOT/build/venv"
PYTHON="${V4_SETUP_PYTHON:-/usr/bin/python3}"

profile=test vulkan=0 check=0 quiet=0
for arg in "$@"; do
  case "$arg" in
    --build) profile=build ;;
    --test) profile=test ;;
    --vulkan) vulkan=1 ;;
    --check) check=1 ;;
    --quiet) quiet=1 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

say() { [[ $quiet == 1 ]] || echo "setup: $*"; }

# Python requirements: the non-comment, non-blank lines of tests/requirements.txt.
want_venv=0
if [[ $profile == test && -f $REQS ]] && grep -qEv '^[[:space:]]*(#|$)' "$REQS"; then
  want_venv=1
fi

pkgs=("${BUILD_PKGS[@]}")
[[ $profile == test ]] && pkgs+=("${ARM_PKGS[@]}")
[[ $vulkan == 1 ]] && pkgs+=("${VULKAN_PKGS[@]}")
[[ $want_venv == 1 ]] && pkgs+=(python3-venv)

# One dpkg-query for the whole list; unknown packages go to stderr and count as missing.
declare -A installed=()
while read -r status name; do
  [[ $status == ii ]] && installed[$name]=1
done < <(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${pkgs[@]}" 2>/dev/null || true)
missing=()
for p in "${pkgs[@]}"; do
  [[ -n ${installed[$p]:-} ]] || missing+=("$p")
done

venv_stamp="$VENV/.requirements.txt"
venv_ok=1
if [[ $want_venv == 1 ]] && ! { [[ -x $VENV/bin/python ]] && cmp -s "$REQS" "$venv_stamp"; }; then
  venv_ok=0
fi

if [[ ${#missing[@]} -eq 0 && $venv_ok == 1 ]]; then
  say "all ${#pkgs[@]} packages present"
  exit 0
fi

install_cmd="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
if [[ $check == 1 ]]; then
  [[ ${#missing[@]} -gt 0 ]] && echo "setup: missing Debian packages: ${missing[*]}" >&2 \
    && echo "setup: install them with: sudo sh -c '$install_cmd'" >&2
  [[ $venv_ok == 0 ]] && echo "setup: Python test venv $VENV is missing or stale" >&2
  exit 1
fi

if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $(id -u) == 0 ]]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    cat >&2 <<EOF
setup: these Debian packages are missing: ${missing[*]}
setup: installing them needs root, and this user ($(id -un)) has no passwordless sudo.
setup: as root, run:
    $install_cmd
setup: (or: sudo sh -c '$install_cmd'), then run make again.
EOF
    exit 1
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ $venv_ok == 0 ]]; then
  say "installing Python test tooling from tests/requirements.txt into build/venv"
  mkdir -p "$ROOT/build"
  [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
  cp "$REQS" "$venv_stamp"
fi
say "done"
