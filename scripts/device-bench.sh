#!/bin/bash
# One device-tool run that builds with CUDA and measures model decode on the GPU machine:
# placements (all on the GPU, routed experts on the CPU, CPU only), decode at 1K / 64K / 512K
# tokens of context, and a kernel-time summary from nsys when the image has it. Results go to
# $OUT (bench.log, nsys.txt). Use from the repository root with carry [".devdeps"]:
#   scripts/device-setup.sh fetch                  # here, once
#   run: scripts/device-bench.sh                   # device tool, kind nvidia-h200
# Environment: LAYERS (default 2), N (decode steps, default 32), SYNTH_ARGS (extra `v4 synth`
# flags, e.g. "--experts 16 --vocab 32000" for a quick try), NSYS=0 to skip profiling.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/v4-bench}
mkdir -p "$OUT"
scripts/device-setup.sh install > "$OUT/build.log" 2>&1
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DV4_CUDA=ON -DV4_CUDA_ARCHS=90 >> "$OUT/build.log" 2>&1 &&
  cmake --build build-gpu -j"$(nproc)" --target v4 >> "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
V4=build-gpu/bin/v4
MODEL=/tmp/v4-flash-${LAYERS:-2}l${SYNTH_ARGS:+-small}.v4
N=${N:-32}
[ -f "$MODEL" ] || $V4 synth -o "$MODEL" --layers "${LAYERS:-2}" ${SYNTH_ARGS:-} > /dev/null
{
  for placement in "" "--cpu-moe" "-ngl 0"; do
    echo "=== placement: ${placement:-all on the GPU}"
    $V4 bench model -m "$MODEL" -p 128 -n "$N" $placement 2>&1 | tail -12
  done
  for depth in 1024 65536 524288; do
    echo "=== depth $depth, all on the GPU"
    $V4 bench model -m "$MODEL" -d "$depth" -p 0 -n "$N" 2>&1 | tail -5
  done
  echo "=== per-op times (node by node: --profile turns CUDA graphs off)"
  $V4 bench model -m "$MODEL" -p 128 -n "$N" --profile 2>&1 | grep -E " ops "
} > "$OUT/bench.log" 2>&1
cat "$OUT/bench.log"
if [ "${NSYS:-1}" = 1 ] && command -v nsys > /dev/null; then
  nsys profile -o /tmp/v4-decode --force-overwrite true $V4 bench model -m "$MODEL" -p 16 -n 16 > /dev/null 2>&1 &&
    nsys stats --report cuda_gpu_kern_sum,cuda_api_sum --format csv /tmp/v4-decode.nsys-rep > "$OUT/nsys.txt" 2>&1
  head -40 "$OUT/nsys.txt"
fi
