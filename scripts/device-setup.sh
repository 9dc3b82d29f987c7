#!/bin/sh
# Development headers for building v4.cpp on the GPU machine of the `device` tool.
#
# That machine (Ubuntu 24.04, nothing downloadable) has the runtime libraries of xxHash and PCRE2
# but not their headers or pkg-config files, so `model/` cannot be configured there as is.
#   here:   scripts/device-setup.sh fetch     downloads the -dev packages into .devdeps/ (ignored)
#   there:  scripts/device-setup.sh install   (run with carry [".devdeps"]) unpacks them and points
#           the unversioned .so names at the runtime libraries the machine already has.
# Neither step is part of `make run` / `make test`, which install from Debian's archive as usual.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
deps="$here/.devdeps"
pkgs="libxxhash-dev libpcre2-dev pkgconf pkgconf-bin libpkgconf3"

case "${1:-}" in
fetch)
  mkdir -p "$deps"
  (cd "$deps" && apt-get download $pkgs)
  ls -l "$deps"
  ;;
install)
  have() { [ -e "$1" ]; }
  put() { for f in "$@"; do [ -e "$dst/$(basename "$f")" ] || cp "$f" "$dst/"; done; }  # never overwrite
  libdir=/usr/lib/x86_64-linux-gnu
  if have /usr/include/xxhash.h && have /usr/include/pcre2.h && command -v pkg-config >/dev/null; then
    echo "device-setup: headers already present"; exit 0
  fi
  [ -d "$deps" ] || { echo "device-setup: $deps missing: run 'scripts/device-setup.sh fetch' here and carry .devdeps" >&2; exit 1; }
  tmp=$(mktemp -d)
  for f in "$deps"/*.deb; do dpkg -x "$f" "$tmp"; done
  dst=/usr/include; put "$tmp"/usr/include/xxhash.h "$tmp"/usr/include/xxh3.h "$tmp"/usr/include/pcre2*.h
  mkdir -p "$libdir/pkgconfig"
  dst="$libdir/pkgconfig"; put "$tmp"/usr/lib/x86_64-linux-gnu/pkgconfig/libxxhash.pc "$tmp"/usr/lib/x86_64-linux-gnu/pkgconfig/libpcre2-8.pc
  # Unversioned link names -> the runtime libraries already installed (versions differ from Debian's).
  for lib in libxxhash libpcre2-8; do
    rt=$(ls "$libdir"/$lib.so.0* 2>/dev/null | head -1)
    [ -n "$rt" ] || { echo "device-setup: no runtime $lib.so.0 in $libdir" >&2; exit 1; }
    ln -sf "$rt" "$libdir/$lib.so"
  done
  if ! command -v pkg-config >/dev/null; then
    dst="$libdir"; put "$tmp"/usr/lib/x86_64-linux-gnu/libpkgconf.so.3*
    cp "$tmp"/usr/bin/pkgconf /usr/local/bin/pkg-config
    mkdir -p /usr/share/pkgconfig
    ldconfig
  fi
  rm -rf "$tmp"
  echo "device-setup: installed xxhash.h, pcre2.h, pkg-config files"
  ;;
*) echo "usage: $0 fetch|install" >&2; exit 2 ;;
esac
