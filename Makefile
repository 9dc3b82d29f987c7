# Thin front for the CMake build (README.md, docs/BUILD.md). Every target first runs
# scripts/setup.sh, which installs missing Debian packages and costs ~20 ms when none are.
#
#   make             Release build into build/ (CLI at build/bin/v4, tests built too)
#   make run         build the CLI, then generate from the shipped default model (MODEL, PROMPT,
#                    N_PREDICT, SEED override it), printing load time and tokens/s
#   make test        native build + ctest, aarch64 cross build + ctest under qemu,
#                    ASan+UBSan build + ctest (ARM=0 / ASAN=0 skip those parts)
#   make bench       build the CLI, then v4 bench ops (BENCH_ARGS picks another one)
#   make clean       remove the build directories (the ccache cache stays)
#
# Variables: JOBS (default 2), CMAKE_ARGS (extra -D options; forces a re-configure),
# MODEL / PROMPT / N_PREDICT / SEED (make run),
# CTEST_ARGS (e.g. "-R cpu"), CUDA_ARCHS (V4_CUDA_ARCHS for build/; 90 when CI is set).

JOBS       ?= 2
BUILD      ?= build
BUILD_ARM  ?= build-aarch64
BUILD_ASAN ?= build-asan
ARM        ?= 1
ASAN       ?= 1
CMAKE_ARGS ?=
CTEST_ARGS ?=
CUDA_ARCHS ?= $(if $(CI),90,)
BENCH_ARGS ?= bench ops
# make run: the shipped default model (model/default/README.md) and what it is asked.
MODEL      ?= model/default/v4-tiny.v4
PROMPT     ?= It is a truth universally acknowledged, that
N_PREDICT  ?= 120
SEED       ?= 42

V4    := $(BUILD)/bin/v4
SETUP := bash scripts/setup.sh --quiet
# Test processes share few cores (-j JOBS): OpenMP threads must not spin at barriers (see tools/v4.cpp).
CTEST  = OMP_WAIT_POLICY=passive ctest --output-on-failure --no-tests=error -j $(JOBS) $(CTEST_ARGS) --test-dir

# ccache: paths relative to the checkout, so another clone (CI) hits the same cache entries.
export CCACHE_BASEDIR   := $(CURDIR)
export CCACHE_NOHASHDIR := 1

# Sanitizer runs: stop at the first report, with a stack.
ASAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_init_order=1 \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# Recursive '=' on purpose: evaluated when the recipe runs, i.e. after setup.sh installed ninja.
GENERATOR = $(if $(shell command -v ninja 2>/dev/null),-G Ninja,)

# $(call configure,DIR,ARGS): configure DIR once (with ARGS, Ninja if present); later builds
# re-run CMake by themselves when a CMakeLists.txt changes. CMAKE_ARGS forces a re-configure.
define configure
	@if [ ! -f $(1)/build.ninja ] && [ ! -f $(1)/Makefile ] || [ -n "$(strip $(CMAKE_ARGS))" ]; then \
	  echo "cmake -S . -B $(1) $(if $(wildcard $(1)/CMakeCache.txt),,$(GENERATOR)) $(strip $(2) $(CMAKE_ARGS))"; \
	  cmake -S . -B $(1) $(if $(wildcard $(1)/CMakeCache.txt),,$(GENERATOR)) $(2) $(CMAKE_ARGS); \
	fi
endef

NATIVE_ARGS := -DCMAKE_BUILD_TYPE=Release $(if $(CUDA_ARCHS),-DV4_CUDA_ARCHS='$(CUDA_ARCHS)')
ARM_ARGS    := -DCMAKE_TOOLCHAIN_FILE=scripts/aarch64-linux-gnu.cmake -DCMAKE_BUILD_TYPE=Release \
               -DV4_KERNELS_ONLY=ON
ASAN_ARGS   := -DV4_SANITIZE=address,undefined -DCMAKE_BUILD_TYPE=Debug \
               -DCMAKE_C_FLAGS_DEBUG='-O1 -g1' -DCMAKE_CXX_FLAGS_DEBUG='-O1 -g1'

.PHONY: all build cli run test test-native test-aarch64 test-asan bench clean setup setup-build help
.DEFAULT_GOAL := all

all: build

setup:
	@$(SETUP) --test

setup-build:
	@$(SETUP) --build

build: setup-build
	$(call configure,$(BUILD),$(NATIVE_ARGS))
	cmake --build $(BUILD) -j $(JOBS)

# run and bench build only the CLI (not the tests).
cli: setup-build
	$(call configure,$(BUILD),$(NATIVE_ARGS))
	cmake --build $(BUILD) -j $(JOBS) --target v4

run: cli
	$(V4) run -m $(MODEL) -p "$(PROMPT)" -n $(N_PREDICT) --temp 0.8 --top-p 0.95 --seed $(SEED)

bench: cli
	$(V4) $(BENCH_ARGS)

test: setup
	@$(MAKE) --no-print-directory test-native
ifneq ($(ARM),0)
	@$(MAKE) --no-print-directory test-aarch64
endif
ifneq ($(ASAN),0)
	@$(MAKE) --no-print-directory test-asan
endif

test-native: build
	$(CTEST) $(BUILD)

test-aarch64: setup
	$(call configure,$(BUILD_ARM),$(ARM_ARGS))
	cmake --build $(BUILD_ARM) -j $(JOBS)
	$(CTEST) $(BUILD_ARM)

test-asan: setup-build
	$(call configure,$(BUILD_ASAN),$(ASAN_ARGS))
	cmake --build $(BUILD_ASAN) -j $(JOBS)
	$(ASAN_ENV) $(CTEST) $(BUILD_ASAN)

clean:
	rm -rf $(BUILD) $(BUILD_ARM) $(BUILD_ASAN)

help:
	@sed -n '1,/^$$/p' Makefile | sed 's/^# \{0,1\}//'
