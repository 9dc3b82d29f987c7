#!/bin/sh
# Builds the default model's corpus from Debian 12 packages (public-domain English prose).
#   tools/train/make_corpus.sh [OUT_DIR]        (default OUT_DIR: /work/default-model/corpus)
# Installs bible-kjv, bible-kjv-text, sword-text-web, diatheke, dict-devil with apt-get (as root or
# through sudo) and unpacks r-cran-janeaustenr with `apt-get download` + `dpkg-deb -x` (installing it
# would pull in R). Then extract_corpus.py writes OUT_DIR/{train.txt,heldout.txt,sources.json}.
# Needs: Debian 12 apt sources (main), python3 (standard library only).
set -eu

OUT=${1:-/work/default-model/corpus}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "error: need root (or passwordless sudo) to run apt-get; run as root:" >&2
    echo "  apt-get install -y --no-install-recommends bible-kjv bible-kjv-text sword-text-web diatheke dict-devil" >&2
    exit 1
  fi
fi

PACKAGES="bible-kjv bible-kjv-text sword-text-web diatheke dict-devil"
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
fi

mkdir -p "$OUT/debs"
if ! ls "$OUT"/debs/r-cran-janeaustenr_*_all.deb >/dev/null 2>&1; then
  # apt-get download writes into the current directory; _apt cannot always write there (harmless warning)
  (cd "$OUT/debs" && apt-get download r-cran-janeaustenr)
fi
DEB=$(ls "$OUT"/debs/r-cran-janeaustenr_*_all.deb | head -n 1)
rm -rf "$OUT/debs/janeaustenr"
dpkg-deb -x "$DEB" "$OUT/debs/janeaustenr"

"$PY" "$HERE/extract_corpus.py" \
  --austen-rdata "$OUT/debs/janeaustenr/usr/lib/R/site-library/janeaustenr/data/Rdata" \
  --austen-deb "$DEB" --out "$OUT"
