# Black-box tests: real kvserver and kvworker processes, clients through libkvclient.
$(B)/tests/e2e_client: $(B)/obj/tests/integration/e2e_client.o $(B)/obj/client/examples/synth.o \
                       $(B)/libkvclient.a $(KERNELS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(B)/tests/curve_client: $(B)/obj/tests/integration/curve_client.o $(B)/libkvclient.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

INTEG_TESTS += tests/integration/test_e2e.sh tests/integration/test_curve.sh tests/fault/test_worker_kill.sh tests/fault/test_server_restart.sh tests/fault/test_worker_freeze.sh
# Refused configs and arenas (test_config.sh), SIGTERM with a client waiting
# (test_shutdown.sh): both use e2e_client.
INTEG_TESTS += tests/integration/test_config.sh tests/integration/test_shutdown.sh
# The prefix cache written at a clean stop and restored into a fresh arena (e2e_client).
INTEG_TESTS += tests/integration/test_snapshot.sh
# The cold tier: evicted prompts read back from disk, after a crash too, within a cap.
INTEG_TESTS += tests/integration/test_cold.sh
# Attend latency histograms, kvctl metrics (Prometheus text) against kvctl stats --json.
INTEG_TESTS += tests/integration/test_metrics.sh
# An edited config applied while serving (kvctl reload, SIGHUP), client keys rotated.
INTEG_TESTS += tests/integration/test_reload.sh
.PHONY: tests
tests: $(B)/kvserver $(B)/kvworker $(B)/kvctl $(B)/tests/e2e_client $(B)/tests/curve_client

# systemd's notify protocol against a stand-in for systemd (notify_sink): test_notify.sh;
# make install, then only what it installed: test_install.sh (the unit's ExecStart under
# notify_sink, clients built with pkg-config).
$(B)/tests/notify_sink: $(B)/obj/tests/integration/notify_sink.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^
# (restrict_af: a command under systemd's RestrictAddressFamilies=, as the unit runs it)
$(B)/tests/restrict_af: $(B)/obj/tests/integration/restrict_af.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^
INTEG_TESTS += tests/integration/test_notify.sh tests/integration/test_install.sh
tests: $(B)/tests/notify_sink $(B)/tests/restrict_af

# make bench: end-to-end latency next to a raw ZeroMQ round trip (same run).
$(B)/tests/bench_e2e: $(B)/obj/tests/bench/bench_e2e.o $(B)/obj/client/examples/synth.o \
                      $(B)/libkvclient.a $(KERNELS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)
# and the prefix cache's snapshot against the file speed of the same bytes (same run).
$(B)/tests/bench_snapshot: $(B)/obj/tests/bench/bench_snapshot.o $(B)/libkvserver.a \
                           $(B)/libkvproto.a $(KERNELS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)
bench: deps
	$(MAKE) all $(B)/tests/bench_e2e $(B)/tests/bench_snapshot
	B=$(B) tests/bench/bench_e2e.sh
	$(B)/tests/bench_snapshot

$(B)/tests/mem_pressure: $(B)/obj/tests/fault/mem_pressure.o $(B)/obj/client/examples/synth.o \
                         $(B)/libkvclient.a $(KERNELS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)
INTEG_TESTS += tests/fault/test_mem_pressure.sh
tests: $(B)/tests/mem_pressure

# Sequences of dead and idle clients expire (tests/fault/test_client_crash.sh).
$(B)/tests/idle_client: $(B)/obj/tests/fault/idle_client.o $(B)/obj/client/examples/synth.o \
                        $(B)/libkvclient.a $(KERNELS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)
INTEG_TESTS += tests/fault/test_client_crash.sh
tests: $(B)/tests/idle_client

# Bad input on every socket (tests/fault/test_bad_input.sh): raw DEALERs + libkvclient.
$(B)/tests/bad_input: $(B)/obj/tests/fault/bad_input.o $(B)/obj/tests/fault/frames.o \
                      $(B)/obj/client/examples/synth.o \
                      $(B)/libkvclient.a $(KERNELS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)
INTEG_TESTS += tests/fault/test_bad_input.sh
tests: $(B)/tests/bad_input

$(B)/tests/conn_churn: $(B)/obj/tests/integration/conn_churn.o $(B)/obj/client/examples/synth.o \
                       $(B)/libkvclient.a $(KERNELS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)
INTEG_TESTS += tests/integration/test_conn_churn.sh
tests: $(B)/tests/conn_churn
