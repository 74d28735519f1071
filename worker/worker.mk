$(B)/kvworker: $(B)/obj/worker/kvworker.o $(B)/obj/kvserver/log.o $(B)/libkvproto.a $(KERNELS_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)
ALL_TARGETS += $(B)/kvworker
