# Black-box tests: real kvserver and kvworker processes, clients through libkvclient.
$(B)/tests/e2e_client: $(B)/obj/tests/integration/e2e_client.o $(B)/obj/client/examples/synth.o \
                       $(B)/libkvclient.a $(KERNELS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

INTEG_TESTS += tests/integration/test_e2e.sh
.PHONY: tests
tests: $(B)/kvserver $(B)/kvworker $(B)/kvctl $(B)/tests/e2e_client
