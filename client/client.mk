# client/client.mk — libkvclient (static + self-contained shared), kvctl, the demo runner.
KERNELS_LIB ?= $(B)/libkvkernels.a

CLIENT_OBJ := $(B)/obj/client/kvclient.o $(B)/obj/client/kvrpc.o
# The part of libkvproto a client needs: wire code and error strings. Not all of
# $(PROTO_OBJ): the arena format code there calls into libkvkernels, which a client does
# not link, and the shared library must not carry undefined references.
CLIENT_PROTO_OBJ := $(B)/obj/proto/kverr.o $(B)/obj/proto/wire.o $(B)/obj/gen/proto/kvarena.pb-c.o
KVCTL_OBJ := $(B)/obj/client/kvctl.o $(B)/obj/client/kvmetrics.o
KVDEMO_OBJ := $(B)/obj/client/examples/kvdemo.o $(B)/obj/client/examples/synth.o

# Static library: the client objects and the wire code, so one -lkvclient is enough.
$(B)/libkvclient.a: $(CLIENT_OBJ) $(CLIENT_PROTO_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

# The static library make install ships: the same code as one object whose only global
# names are kvc_* (kvclient.h), so a program linking it statically cannot clash with its
# wire code (kvr_*, kvp_*, the generated kvarena__*). kvctl and the tests use the one above.
$(B)/libkvclient-install.a: $(CLIENT_OBJ) $(CLIENT_PROTO_OBJ)
	@rm -f $@ $(B)/kvclient-all.o
	$(LD) -r -o $(B)/kvclient-all.o $^
	nm --defined-only -g $(B)/kvclient-all.o | awk '$$3 ~ /^kvc_/ { print $$3 }' > $(B)/kvclient.syms
	objcopy --keep-global-symbols=$(B)/kvclient.syms $(B)/kvclient-all.o
	$(AR) rcs $@ $(B)/kvclient-all.o

# Shared library: self-contained (wire code inside, not exported: libkvclient.map), links
# its own dependencies.
$(B)/libkvclient.so: $(CLIENT_OBJ) $(CLIENT_PROTO_OBJ) client/libkvclient.map
	$(CC) -shared -Wl,-soname,libkvclient.so.$(SOVERSION) -Wl,--version-script=client/libkvclient.map \
	  $(LDFLAGS) -Wl,--no-undefined -o $@ $(filter %.o,$^) $(PKG_LIBS) $(LDLIBS)

$(B)/kvctl: $(KVCTL_OBJ) $(B)/libkvclient.a
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(B)/kvdemo: $(KVDEMO_OBJ) $(B)/libkvclient.a $(KERNELS_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

ALL_TARGETS += $(B)/libkvclient.a $(B)/libkvclient-install.a $(B)/libkvclient.so $(B)/kvctl \
               $(B)/kvdemo

# ---- tests: a fake server (client/tests/kvmock.c) and the client against it ----
$(B)/kvmock: $(B)/obj/client/tests/kvmock.o $(B)/obj/client/examples/synth.o \
             $(B)/libkvclient.a $(KERNELS_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(B)/tests/test_kvclient: $(B)/obj/client/tests/test_kvclient.o $(B)/libkvclient.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(PKG_LIBS) $(LDLIBS)

UNIT_TESTS += $(B)/tests/test_kvclient client/tests/test_client_mock.sh
tests: $(B)/kvmock $(B)/kvctl $(B)/kvdemo $(B)/tests/test_kvclient
