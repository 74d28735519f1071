# deploy/deploy.mk — make install / make uninstall.
#   make install [PREFIX=/usr/local] [DESTDIR=staging root] [BINDIR= LIBDIR= INCLUDEDIR=
#                SYSCONFDIR= UNITDIR= DATADIR=]
# Installs kvserver, kvworker, kvctl; libkvclient and libkvkernels (static, and shared with
# a versioned soname; libkvclient's global names are kvc_* alone in both); their headers in INCLUDEDIR/kvarena with pkg-config files (kvclient,
# kvkernels); the systemd units kvarena@.service and kvarena-metrics@.service (Prometheus
# over HTTP) with these paths filled in; the default
# config as DATADIR/kvarena/kvarena.ini and, only where none exists yet, as
# SYSCONFDIR/kvarena/default.ini (an operator's config is never overwritten nor removed).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR ?= $(PREFIX)/share
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL ?= install
# run after a root install without DESTDIR; LDCONFIG=: skips it
LDCONFIG ?= ldconfig

# Paths filled into the unit and the pkg-config files: where the files will be at run time
# (without DESTDIR).
SUBST_PATHS = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@BINDIR@|$(BINDIR)|g' \
  -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' \
  -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@VERSION@|$(VERSION)|g'

INSTALL_BINS := kvserver kvworker kvctl
INSTALL_LIBS := kvclient kvkernels

install: all
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)/kvarena \
	  $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DATADIR)/kvarena $(DESTDIR)$(SYSCONFDIR)/kvarena
	$(INSTALL) -m 0755 $(addprefix $(B)/,$(INSTALL_BINS)) $(DESTDIR)$(BINDIR)/
	$(INSTALL) -m 0644 client/kvclient.h kernels/kvkernels.h $(DESTDIR)$(INCLUDEDIR)/kvarena/
	@set -e; for l in $(INSTALL_LIBS); do \
	  a=$(B)/lib$$l.a; [ ! -e $(B)/lib$$l-install.a ] || a=$(B)/lib$$l-install.a; \
	  $(INSTALL) -m 0644 $$a $(DESTDIR)$(LIBDIR)/lib$$l.a; \
	  $(INSTALL) -m 0755 $(B)/lib$$l.so $(DESTDIR)$(LIBDIR)/lib$$l.so.$(VERSION); \
	  ln -sf lib$$l.so.$(VERSION) $(DESTDIR)$(LIBDIR)/lib$$l.so.$(SOVERSION); \
	  ln -sf lib$$l.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/lib$$l.so; \
	done
	$(SUBST_PATHS) client/kvclient.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/kvclient.pc
	$(SUBST_PATHS) kernels/kvkernels.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/kvkernels.pc
	$(SUBST_PATHS) deploy/kvarena@.service.in > $(DESTDIR)$(UNITDIR)/kvarena@.service
	$(SUBST_PATHS) deploy/kvarena-metrics@.service.in > $(DESTDIR)$(UNITDIR)/kvarena-metrics@.service
	chmod 0644 $(DESTDIR)$(LIBDIR)/pkgconfig/kv*.pc $(DESTDIR)$(UNITDIR)/kvarena*@.service
	$(INSTALL) -m 0644 deploy/kvarena.ini $(DESTDIR)$(DATADIR)/kvarena/kvarena.ini
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/kvarena/default.ini ]; then \
	  echo "make install: kept $(DESTDIR)$(SYSCONFDIR)/kvarena/default.ini (the default is $(DATADIR)/kvarena/kvarena.ini)"; \
	else $(INSTALL) -m 0644 deploy/kvarena.ini $(DESTDIR)$(SYSCONFDIR)/kvarena/default.ini; fi
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v $(LDCONFIG) >/dev/null; then $(LDCONFIG); fi

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(INSTALL_BINS)) \
	  $(DESTDIR)$(INCLUDEDIR)/kvarena/kvclient.h $(DESTDIR)$(INCLUDEDIR)/kvarena/kvkernels.h \
	  $(foreach l,$(INSTALL_LIBS),$(DESTDIR)$(LIBDIR)/lib$(l).a $(DESTDIR)$(LIBDIR)/lib$(l).so \
	    $(DESTDIR)$(LIBDIR)/lib$(l).so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/lib$(l).so.$(VERSION) \
	    $(DESTDIR)$(LIBDIR)/pkgconfig/$(l).pc) \
	  $(DESTDIR)$(UNITDIR)/kvarena@.service $(DESTDIR)$(UNITDIR)/kvarena-metrics@.service \
	  $(DESTDIR)$(DATADIR)/kvarena/kvarena.ini
	@rmdir $(DESTDIR)$(INCLUDEDIR)/kvarena $(DESTDIR)$(DATADIR)/kvarena 2>/dev/null || true
	@if [ -d $(DESTDIR)$(SYSCONFDIR)/kvarena ]; then \
	  echo "make uninstall: kept $(DESTDIR)$(SYSCONFDIR)/kvarena (configuration)"; fi
