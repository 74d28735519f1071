# kvarena — plain GNU make + pkg-config. Everything is built under $(B)/.
#   make          build servers, worker, libraries, kvctl, demo
#   make run      install missing packages, build, launch server + workers, run the demo
#   make test     the full suite (unit + real-process integration); SANITIZE=1 for ASan+UBSan
#   make soak     the fault tests at length
#   make bench    end-to-end latency next to a raw ZeroMQ round trip, shared-prompt decode,
#                 snapshot speed
#   make bench-kernels   kernel throughput against the machine's measured limits
#   make install  binaries, libraries, headers, pkg-config files, the systemd unit and a
#                 default config under PREFIX (/usr/local), DESTDIR for staging; make uninstall
CC ?= gcc
ifeq ($(origin CC),default)
CC := gcc
endif
VERSION := 0.1.0
# the libraries' ABI: libkvclient.so.0, libkvkernels.so.0
SOVERSION := 0
SANITIZE ?= 0
ifeq ($(SANITIZE),1)
B ?= build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
B ?= build
SANFLAGS :=
endif

PKGS := libzmq libprotobuf-c libsodium liblz4 inih
DEB_PKGS := libzmq3-dev libprotobuf-c-dev protobuf-c-compiler liblz4-dev libsodium-dev \
            libcmocka-dev libinih-dev pkg-config
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -Wall -Wextra -Werror -fPIC $(SANFLAGS) -MMD -MP
CPPFLAGS += -I. -Iproto -I$(B)/gen $(PKG_CFLAGS)
LDFLAGS += $(SANFLAGS)
LDLIBS += -lpthread -lm

.PHONY: all deps run test soak bench bench-kernels clean fuzz install uninstall
all:

# ---- generated protobuf-c code (never committed) ----
GEN := $(B)/gen/proto/kvarena.pb-c.c
$(B)/gen/proto/kvarena.pb-c.c $(B)/gen/proto/kvarena.pb-c.h: proto/kvarena.proto
	@mkdir -p $(B)/gen
	protoc-c --c_out=$(B)/gen proto/kvarena.proto

# Objects: $(B)/obj/<path>.o from <path>.c; generated sources from $(B)/gen.
$(B)/obj/%.o: %.c $(B)/gen/proto/kvarena.pb-c.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(EXTRA_CFLAGS_$(notdir $*)) -c $< -o $@
$(B)/obj/gen/%.o: $(B)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -Wno-unused-parameter -c $< -o $@

# libkvproto: wire code, framing, validation, error strings (shared by every process).
PROTO_SRC := $(wildcard proto/*.c)
PROTO_OBJ := $(PROTO_SRC:%.c=$(B)/obj/%.o) $(B)/obj/gen/proto/kvarena.pb-c.o
$(B)/libkvproto.a: $(PROTO_OBJ)
	$(AR) rcs $@ $^

UNIT_TESTS :=
INTEG_TESTS :=
include kernels/kernels.mk
include kvserver/kvserver.mk
include worker/worker.mk
include client/client.mk
include tests/tests.mk
include tests/integration/integration.mk
include tests/fuzz/fuzz.mk
include deploy/deploy.mk

all: $(ALL_TARGETS)

# ---- packages ----
deps:
	@missing=""; \
	for p in $(PKGS) cmocka; do pkg-config --exists $$p 2>/dev/null || missing=1; done; \
	command -v protoc-c >/dev/null 2>&1 || missing=1; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing $(DEB_PKGS)"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(DEB_PKGS) >/dev/null || \
	  { echo "make deps: apt-get install failed" >&2; exit 1; }; \
	fi

run: deps
	$(MAKE) all
	B=$(B) deploy/kvarena-run.sh deploy/kvarena.ini

test: deps
	$(MAKE) all tests
	B=$(B) tests/run.sh $(UNIT_TESTS) $(INTEG_TESTS)

# The fault tests at length: thousands of worker kills, dozens of server restarts.
soak: deps
	$(MAKE) all tests
	B=$(B) KILLS=$${KILLS:-3000} RESTARTS=$${RESTARTS:-40} FREEZES=$${FREEZES:-30} SECONDS_LOAD=$${SECONDS_LOAD:-60} \
	  KV_TEST_TIMEOUT=3600 tests/run.sh tests/fault/test_worker_kill.sh tests/fault/test_server_restart.sh \
	  tests/fault/test_worker_freeze.sh tests/fault/test_mem_pressure.sh

clean:
	rm -rf build build-san build-fuzz build-clang

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
