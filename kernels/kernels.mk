# kernels/kernels.mk — libkvkernels, its unit tests and its benchmark.
# SIMD files get their instruction-set flags here and only here: the rest of the library is
# built for the baseline CPU and picks an implementation at run time (kvk_attn.c).
KERNELS_SRC := $(wildcard kernels/*.c)
KERNELS_OBJ := $(KERNELS_SRC:%.c=$(B)/obj/%.o)
KERNELS_LIB := $(B)/libkvkernels.a

# -O3: the register-blocked loops of attn_simd.h must be fully unrolled to stay in registers.
EXTRA_CFLAGS_attn_avx2 := -O3 -mavx2 -mfma -mf16c
EXTRA_CFLAGS_attn_avx512 := -O3 -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl
EXTRA_CFLAGS_attn_amx := $(EXTRA_CFLAGS_attn_avx512) -mavx512bf16 -mamx-tile -mamx-bf16
# kvk_plan.c writes every output row (plan_write): at -O2, gcc 12 leaves its loops over
# head_dim scalar (a trip count it cannot see needs an epilogue), a sixth of a prefill on amx;
# kvk_core.c turns RoPE angles position by position (kvk__rope_walk_at), the same kind of loop.
EXTRA_CFLAGS_kvk_plan := -O3
EXTRA_CFLAGS_kvk_core := -O3

$(KERNELS_LIB): $(KERNELS_OBJ)
	$(AR) rcs $@ $^

# The same as a shared library (make install), exporting kvkernels.h's names only.
$(B)/libkvkernels.so: $(KERNELS_OBJ) kernels/libkvkernels.map
	$(CC) -shared -Wl,-soname,libkvkernels.so.$(SOVERSION) -Wl,--version-script=kernels/libkvkernels.map \
	  $(LDFLAGS) -Wl,--no-undefined -o $@ $(filter %.o,$^) -lpthread -lm

ALL_TARGETS += $(KERNELS_LIB) $(B)/libkvkernels.so

# Unit tests: cmocka, scalar reference and every SIMD path against an fp64 naive attention.
EXTRA_CFLAGS_test_kernels := -Ikernels
# tests/unit/attn_oracle: the scenarios, paged K/V and fp64 oracle attention test_kernels runs.
$(B)/tests/test_kernels: $(B)/obj/tests/unit/test_kernels.o $(B)/obj/tests/unit/attn_oracle.o \
                         $(KERNELS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(CMOCKA_LIBS) $(LDLIBS)

UNIT_TESTS += $(B)/tests/test_kernels
.PHONY: tests
tests: $(B)/tests/test_kernels

# The library used on its own (README "The kernels on their own"): built with everything,
# run by make test (it checks its own results).
EXTRA_CFLAGS_kvk_example := -Ikernels
$(B)/kvk_example: $(B)/obj/kernels/examples/kvk_example.o $(KERNELS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)
ALL_TARGETS += $(B)/kvk_example
UNIT_TESTS += $(B)/kvk_example

# Kernel benchmark: built with the library's flags, run against the measured machine limits;
# -O3 as the kernels: at -O2 gcc keeps the streaming baseline's accumulator arrays in memory
# (a third of its speed).
EXTRA_CFLAGS_bench_kernels := -Ikernels -O3
$(B)/tests/bench_kernels: $(B)/obj/tests/bench/bench_kernels.o $(KERNELS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

bench-kernels: $(B)/tests/bench_kernels
	$(B)/tests/bench_kernels
