# Cross build for 64-bit ARM Linux with Debian's g++-aarch64-linux-gnu; tests run under
# qemu-user (CMAKE_CROSSCOMPILING_EMULATOR), so `ctest` works as in a native build.
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=scripts/aarch64-linux-gnu.cmake -DV4_KERNELS_ONLY=ON
# Packages (Debian 12): g++-aarch64-linux-gnu qemu-user (scripts/setup.sh installs them).
# QEMU_CPU in the environment picks the emulated CPU at test time (default "max": NEON, fp16,
# dotprod, i8mm, bf16, SVE); e.g. QEMU_CPU=cortex-a53 to test the plain-ARMv8.0 fallbacks.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(V4_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${V4_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${V4_CROSS_TRIPLE}-g++)

# The target's libraries and headers live under /usr/aarch64-linux-gnu; programs run on the host.
set(CMAKE_FIND_ROOT_PATH /usr/${V4_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

find_program(V4_QEMU_AARCH64 qemu-aarch64)
if(V4_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${V4_QEMU_AARCH64} -L /usr/${V4_CROSS_TRIPLE})
else()
  message(WARNING "qemu-aarch64 not found (Debian: qemu-user): aarch64 tests cannot run")
endif()
