# bus - non-recursive GNU make build.
#
#   make                 library, bus, (busd), into build/
#   make test            install missing Debian packages, build, run all suites
#   make asan test       the same under AddressSanitizer+UBSan, in build-asan/
#   make tsan test       the same under ThreadSanitizer, in build-tsan/
#   make fuzz            libFuzzer over tests/fuzz_*.c, FUZZ_SECS each (60), in build-fuzz/
#   make bench-quick     the short benchmark (ratios against the bare limits)
#   make demo            a real run of the bus
#   make install PREFIX=/usr/local [DESTDIR=...]
#   make CC=clang        build with clang
#   V=1                  show the commands

CC ?= cc
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCDIR ?= $(PREFIX)/include
BINDIR ?= $(PREFIX)/bin

BUILD := build
SAN_FLAGS :=
ifneq ($(filter asan,$(MAKECMDGOALS)),)
BUILD := build-asan
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
ifneq ($(filter tsan,$(MAKECMDGOALS)),)
BUILD := build-tsan
SAN_FLAGS := -fsanitize=thread -fno-omit-frame-pointer
endif
# make fuzz: clang's libFuzzer over the fuzz_* harnesses, with ASan+UBSan.
ifneq ($(filter fuzz,$(MAKECMDGOALS)),)
BUILD := build-fuzz
CC := clang
SAN_FLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined
endif

# By its name too: on a fresh machine clang may not be installed yet when
# this is read (make test installs it before the first compile).
IS_CLANG := $(or $(shell $(CC) --version 2>/dev/null | grep -q clang && echo 1),$(if $(findstring clang,$(notdir $(CC))),1))
WARN := -Wall -Wextra -Werror -Wmissing-prototypes -Wstrict-prototypes -Wshadow -Wundef \
	-Wformat=2 -Wwrite-strings -Wpointer-arith -Wcast-qual -Wvla
ifneq ($(IS_CLANG),1)
WARN += -Wduplicated-cond -Wlogical-op -Wduplicated-branches
# TSan does not model atomic_thread_fence; the seqlock checks need it (their
# races are between processes, which TSan cannot see anyway).
ifeq ($(BUILD),build-tsan)
WARN += -Wno-tsan
endif
endif

PKGS_LIB := liburcu-bp liburcu-cds numa
CFLAGS ?= -O2 -g
override CFLAGS += -std=gnu11 -D_GNU_SOURCE -fPIC -pthread $(WARN) $(SAN_FLAGS) -MMD -MP \
	-Ilibbus/include -Ilibbus/src $(shell pkg-config --cflags $(PKGS_LIB) 2>/dev/null)
override LDFLAGS += -pthread $(SAN_FLAGS)
LIBS := $(shell pkg-config --libs $(PKGS_LIB) 2>/dev/null || echo -lurcu-bp -lurcu-common -lurcu-cds -lnuma)
TEST_LIBS := $(shell pkg-config --libs criterion 2>/dev/null || echo -lcriterion)

ifeq ($(V),1)
Q :=
else
Q := @
endif

LIB_SRC := $(wildcard libbus/src/*.c)
LIB_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC))
TOOL_SRC := $(wildcard tools/*.c)
TOOL_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(TOOL_SRC))
DAEMON_SRC := $(wildcard daemon/*.c)
DAEMON_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(DAEMON_SRC))
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TEST_UTIL_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tests/util_*.c))
THR_SRC := $(wildcard tests/thr_*.c)
THR_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(THR_SRC))
# fuzz_* harnesses: in make test, a runner over their corpus (tests/fuzz/);
# in make fuzz, libFuzzer targets.
FUZZ_SRC := $(wildcard tests/fuzz_*.c)
FUZZ_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(FUZZ_SRC))
FUZZ_SECS ?= 60
# Criterion's runner cannot start under ThreadSanitizer (Snaipe/Criterion#274):
# tsan runs the threaded thr_* programs (TSan sees races between threads of
# one process only) and the CLI script; the other modes run everything.
ifeq ($(BUILD),build-tsan)
RUN_BIN := $(THR_BIN)
else
RUN_BIN := $(TEST_BIN) $(THR_BIN) $(FUZZ_BIN)
endif
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

STATIC_LIB := $(BUILD)/lib/libbus.a
SHARED_LIB := $(BUILD)/lib/libbus.so.0
SHARED_LINK := $(BUILD)/lib/libbus.so
BUS_BIN := $(BUILD)/bin/bus
BUSD_BIN := $(if $(DAEMON_SRC),$(BUILD)/bin/busd)

.SECONDARY:
.PHONY: all test asan tsan fuzz deps fuzzdeps bench bench-quick demo install clean stress
all: $(STATIC_LIB) $(SHARED_LINK) $(BUS_BIN) $(BUSD_BIN)

# asan/tsan only select the build directory and flags above.
asan tsan:
	@:

# Each harness (FUZZ_ONLY=segment: that one) for FUZZ_SECS seconds, from a
# copy of its corpus (new inputs
# stay in build-fuzz/corpus/; a crash is saved as build-fuzz/crash-*: copy
# it into tests/fuzz/<name>/ with the fix, and make test replays it).
fuzz: fuzzdeps $(FUZZ_BIN)
	$(Q)set -e; for t in $(if $(FUZZ_ONLY),$(BUILD)/tests/fuzz_$(FUZZ_ONLY),$(FUZZ_BIN)); do n=$${t##*/fuzz_}; \
		mkdir -p $(BUILD)/corpus/$$n; cp -n tests/fuzz/$$n/* $(BUILD)/corpus/$$n/; \
		echo "== fuzz_$$n, $(FUZZ_SECS) s"; \
		$$t -max_total_time=$(FUZZ_SECS) -max_len=131072 -timeout=10 \
			-artifact_prefix=$(BUILD)/ $(BUILD)/corpus/$$n; done

# The goals that install what is missing (test, demo, bench) do so before
# the first compile: with -j, a compile racing apt-get fails on a fresh
# machine for want of a header.
ifneq ($(filter test demo bench bench-quick,$(MAKECMDGOALS)),)
DEPS_FIRST := deps
endif
ifneq ($(filter fuzz,$(MAKECMDGOALS)),)
DEPS_FIRST := fuzzdeps
endif

$(BUILD)/obj/%.o: %.c | $(DEPS_FIRST)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(STATIC_LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

# -z nodelete: dlclose() does not unload the library, whose SIGBUS handler
# (libbus/src/mapguard.h) may be installed.
$(SHARED_LIB): $(LIB_OBJ) libbus/libbus.map
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared -Wl,-soname,libbus.so.0 -Wl,--version-script=libbus/libbus.map -Wl,-z,nodelete \
		$(LDFLAGS) -o $@ $(LIB_OBJ) $(LIBS)

$(SHARED_LINK): $(SHARED_LIB)
	$(Q)ln -sf libbus.so.0 $@

$(BUS_BIN): $(TOOL_OBJ) $(STATIC_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(TOOL_OBJ) $(STATIC_LIB) $(LIBS)

# busd links the static library: it uses libbus internals (layout, rings,
# segments) that the shared library does not export.
# It shares the command line's value parsers (tools/parse.c).
$(BUILD)/bin/busd: $(DAEMON_OBJ) $(BUILD)/obj/tools/parse.o $(STATIC_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(DAEMON_OBJ) $(BUILD)/obj/tools/parse.o $(STATIC_LIB) $(LIBS)

$(BUILD)/tests/%: tests/%.c $(TEST_UTIL_OBJ) $(STATIC_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TEST    $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(TEST_UTIL_OBJ) $(STATIC_LIB) $(LIBS) $(TEST_LIBS)

$(BUILD)/tests/thr_%: tests/thr_%.c $(BUILD)/obj/tests/util_common.o $(STATIC_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TEST    $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/obj/tests/util_common.o $(STATIC_LIB) $(LIBS)

$(BUILD)/tests/fuzz_%: tests/fuzz_%.c $(STATIC_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TEST    $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) $(if $(filter build-fuzz,$(BUILD)),-fsanitize=fuzzer -DBUS_LIBFUZZER) \
		-o $@ $< $(STATIC_LIB) $(LIBS)

$(BUILD)/bench/%: bench/%.c $(STATIC_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  BENCH   $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(STATIC_LIB) $(LIBS) -lm

# Debian packages the build, tests and benchmarks need.
deps:
	$(Q)./.ci/deps.sh

fuzzdeps:
	$(Q)DEPS_FUZZ=1 ./.ci/deps.sh

test: deps all $(RUN_BIN)
	$(Q)BUILD=$(BUILD) ./tests/run.sh $(RUN_BIN)

stress: all $(RUN_BIN)
	$(Q)BUS_STRESS=1 BUILD=$(BUILD) ./tests/run.sh $(RUN_BIN)

bench-quick: deps all $(BENCH_BIN)
	$(Q)BUILD=$(BUILD) ./bench/run.sh quick

bench: deps all $(BENCH_BIN)
	$(Q)BUILD=$(BUILD) ./bench/run.sh full

demo: deps all
	$(Q)BUILD=$(BUILD) ./tools/demo.sh

$(BUILD)/bus.pc: libbus/bus.pc.in
	@mkdir -p $(dir $@)
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCDIR@|$(INCDIR)|' \
		-e 's|@VERSION@|$(shell sed -n 's/^#define BUS_VERSION_STRING "\(.*\)"/\1/p' libbus/include/bus/bus.h)|' $< > $@

install: all $(BUILD)/bus.pc
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR)/bus $(DESTDIR)$(BINDIR)
	install -m 644 $(STATIC_LIB) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(SHARED_LIB) $(DESTDIR)$(LIBDIR)/
	ln -sf libbus.so.0 $(DESTDIR)$(LIBDIR)/libbus.so
	install -m 644 libbus/include/bus/*.h $(DESTDIR)$(INCDIR)/bus/
	install -m 644 $(BUILD)/bus.pc $(DESTDIR)$(LIBDIR)/pkgconfig/
	install -m 755 $(BUS_BIN) $(BUSD_BIN) $(DESTDIR)$(BINDIR)/

clean:
	rm -rf build build-asan build-tsan build-fuzz

-include $(shell find $(BUILD)/obj $(BUILD)/bench $(BUILD)/tests -name '*.d' 2>/dev/null)
