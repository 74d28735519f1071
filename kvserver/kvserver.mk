# kvserver: the arena owner. Its modules (all but main.c) also form a library for unit tests.
KVS_SRC := $(filter-out kvserver/main.c,$(wildcard kvserver/*.c))
KVS_OBJ := $(KVS_SRC:%.c=$(B)/obj/%.o)
# the snapshot's byte planes: loops over a page the compiler vectorizes at -O3 only
EXTRA_CFLAGS_snapshot := -O3
$(B)/libkvserver.a: $(KVS_OBJ)
	$(AR) rcs $@ $^
$(B)/kvserver: $(B)/obj/kvserver/main.o $(B)/libkvserver.a $(B)/libkvproto.a $(KERNELS_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)
ALL_TARGETS += $(B)/kvserver
