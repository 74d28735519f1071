# tests/tests.mk: filled by its module

# ---- unit tests of kvserver's page allocator and sequences (cmocka) ----
# test_pages: allocator, block hash, LRU, eviction; test_seq: prefix reuse, OOM/quota, CoW
# fork, ids, dedup; test_recover: restarts; test_snapshot: the prefix cache on disk; test_cold: the cold
# tier. All run
# on arenas in private memory (tests/unit/arena_fixture.h).
KVS_UNIT_TESTS := $(B)/tests/test_pages $(B)/tests/test_seq $(B)/tests/test_recover \
                  $(B)/tests/test_snapshot $(B)/tests/test_cold
$(KVS_UNIT_TESTS): $(B)/tests/%: $(B)/obj/tests/unit/%.o $(B)/libkvserver.a $(B)/libkvproto.a $(KERNELS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(CMOCKA_LIBS) $(PKG_LIBS) $(LDLIBS)
UNIT_TESTS += $(KVS_UNIT_TESTS)
.PHONY: tests
tests: $(KVS_UNIT_TESTS)
