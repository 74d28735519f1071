# tests/fuzz/fuzz.mk — libFuzzer targets for the checks that face untrusted bytes:
#   fuzz_envelope      client request envelope + frame sizes -> kvp_check_request
#   fuzz_job           job envelope + frame sizes -> kvp_check_job (what a kvworker trusts)
#   fuzz_arena_header  header block + region size -> kva_header_check
#   fuzz_snapshot      a snapshot file (mostly well-formed, then damaged) -> kvs_snapshot_load
#   fuzz_cold          a cold tier segment (mostly well-formed, then damaged) -> kvs_cold_open,
#                      every page it indexed read back (kvs_cold_restore)
#   fuzz_attn          a ragged batch with shared prefixes -> kvk_attn on each SIMD ISA
#                      against the scalar reference (differential)
#
#   make fuzz [FUZZ_SECONDS=60]   build build-fuzz/ with clang, run each target N seconds
#   make fuzz-smoke               each target ~10 s (CI)
#   make fuzz-corpus              regenerate the committed seeds in tests/fuzz/corpus/
#
# Opt-in only: nothing here is a prerequisite of all or test, so a machine without clang's
# fuzzer runtime builds and tests as before. The libraries come from this Makefile's own
# rules, re-run with B=build-fuzz CC=clang and the sanitizers plus coverage instrumentation
# in SANFLAGS. Each run works on a copy of the seeds under build-fuzz/corpus/ (new inputs
# never land in the repository); crashes are written to build-fuzz/artifacts/. Each target
# has a dictionary (tests/fuzz/<target>.dict) of the tags and limit values it compares.
FUZZ_B := build-fuzz
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := fuzz_envelope fuzz_job fuzz_arena_header fuzz_snapshot fuzz_cold fuzz_attn
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-corpus fuzz-inner

fuzz-build: deps
	@command -v $(FUZZ_CC) >/dev/null || { echo "make fuzz: needs $(FUZZ_CC) (apt-get install clang)" >&2; exit 1; }
	$(MAKE) --no-print-directory B=$(FUZZ_B) CC=$(FUZZ_CC) \
	    SANFLAGS="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" fuzz-inner

ifeq ($(B),$(FUZZ_B))
FUZZ_LIBS := $(B)/libkvserver.a $(B)/libkvproto.a $(KERNELS_LIB)
fuzz-inner: $(FUZZ_TARGETS:%=$(B)/fuzz/%) $(B)/fuzz/seeds
$(FUZZ_TARGETS:%=$(B)/fuzz/%): $(B)/fuzz/%: $(B)/obj/tests/fuzz/%.o $(FUZZ_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) -fsanitize=fuzzer -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS) $(LDLIBS)
$(B)/fuzz/seeds: $(B)/obj/tests/fuzz/seeds.o $(FUZZ_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)
endif

# $(call fuzz_run,SECONDS): each target on a fresh copy of its seeds.
define fuzz_run
	@set -e; for t in $(FUZZ_TARGETS); do \
	    work=$(FUZZ_B)/corpus/$$t; rm -rf $$work; mkdir -p $$work $(FUZZ_B)/artifacts; \
	    cp tests/fuzz/corpus/$$t/* $$work/; \
	    echo "== $$t: $(1) s"; \
	    $(FUZZ_B)/fuzz/$$t -max_total_time=$(1) -print_final_stats=1 -max_len=8192 \
	        -dict=tests/fuzz/$$t.dict \
	        -artifact_prefix=$(FUZZ_B)/artifacts/$$t- $$work 2>$(FUZZ_B)/$$t.log || \
	        { tail -40 $(FUZZ_B)/$$t.log >&2; echo "$$t: FAILED (log $(FUZZ_B)/$$t.log)" >&2; exit 1; }; \
	    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' $(FUZZ_B)/$$t.log | tr '\n' ' '; \
	    grep -E '^#[0-9]+.*DONE' $(FUZZ_B)/$$t.log | tail -1; \
	done
endef

fuzz: fuzz-build
	$(call fuzz_run,$(FUZZ_SECONDS))

fuzz-smoke: fuzz-build
	$(call fuzz_run,10)

fuzz-corpus: fuzz-build
	rm -rf tests/fuzz/corpus
	mkdir -p $(FUZZ_TARGETS:%=tests/fuzz/corpus/%)
	$(FUZZ_B)/fuzz/seeds tests/fuzz/corpus
