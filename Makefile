# arqond: the two commands users need are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# What `make run` needs on a bare Debian 12 (Debian's python3 has no venv module without it).
BASE_APT_PACKAGES := python3-venv
# What the tests drive: the seed's shell tools, systemd containers, packaging and man tools,
# and nats-server for the cluster's tests (arqond(8) CLUSTER).
APT_PACKAGES := socat jq tmux curl mandoc iproute2 util-linux procps zsh \
	systemd-container debootstrap debhelper dh-python python3-pip python3-all lintian rpm rpmlint man-db \
	nats-server
# The benchmarks' load generator (node; npm comes with it or as Debian's npm), brokers, shell peers.
BENCH_APT_PACKAGES := nodejs nats-server mosquitto inotify-tools jq
# Two workers, each test file kept on one (its daemons, containers and module fixtures stay
# together): about 5 minutes instead of 9 on 2 cores. PYTEST_ARGS= runs it in one process.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: run test setup system-deps clean man deb rpm install package-source \
	dev-install dev-uninstall bench bench-quick bench-deps bench-system-deps soak

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || \
		$(MAKE) --no-print-directory system-deps APT_PACKAGES="$(BASE_APT_PACKAGES)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# Debian packages the daemon's tests drive (socat, jq, tmux as the seed's shell examples use).
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# Set up and run arqond in the foreground with the default configuration; `arqon`, `arqond`,
# their man pages and shell completion are usable by name meanwhile (dev-install). The group
# and the dirs get what the packages' sysusers.d and tmpfiles.d give (arqond-moo(7)
# "Permissions"), owned by root, which arqond runs as here: a user added with
# `usermod -aG $(MOO_GROUP) NAME` may use every tmuxMOO example at once.
MOO_GROUP ?= zgents
run: dev-install
	getent group $(MOO_GROUP) >/dev/null || groupadd --system $(MOO_GROUP)
	install -d -m 0755 /var/lib/arqond /run/arqond
	install -d -m 2755 -g $(MOO_GROUP) /var/moo
	install -d -m 3775 -g $(MOO_GROUP) /var/log/moo
	$(VENV)/bin/arqond $(ARGS)

# Links from DEV_PREFIX (/usr/local) into this checkout: the venv's arqon and arqond on PATH,
# the man pages where man(1) looks, the completion where bash and zsh look. Nothing is copied,
# so an edit here shows at once; `make dev-uninstall` takes the links away again.
DEV_PREFIX ?= /usr/local
DEV_LINKS = bin/arqon bin/arqond share/bash-completion/completions/arqon \
	share/zsh/site-functions/_arqon \
	$(foreach page,$(MAN_PAGES),share/man/man$(subst .,,$(suffix $(page)))/$(notdir $(page)))
dev-install: setup man build/completion/arqon build/completion/_arqon
	for link in $(DEV_LINKS); do \
		case $$link in \
			bin/*) target=$(abspath $(VENV))/$$link ;; \
			share/man/*) target=$(CURDIR)/man/$${link##*/} ;; \
			*) target=$(CURDIR)/build/completion/$${link##*/} ;; \
		esac; \
		install -d $(DEV_PREFIX)/$${link%/*} && ln -sfn $$target $(DEV_PREFIX)/$$link || exit 1; \
	done

dev-uninstall:
	for link in $(DEV_LINKS); do \
		if [ -L $(DEV_PREFIX)/$$link ]; then rm $(DEV_PREFIX)/$$link; fi; done

# Set up and pass the whole test suite.
test: system-deps setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Benchmarks (bench/README.md): Python peers and uvloop into the venv, Node's ws into
# bench/node_modules from the lockfile. Brokers (nats-server, mosquitto) come from apt.
bench/node_modules/.installed: bench/package.json bench/package-lock.json
	cd bench && npm ci --no-audit --no-fund --silent
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed bench/requirements.txt
	$(PY) -m pip install --quiet -r bench/requirements.txt
	touch $@

bench-system-deps:
	@$(MAKE) --no-print-directory system-deps APT_PACKAGES="$(BENCH_APT_PACKAGES)"

bench-deps: bench-system-deps $(VENV)/.bench-installed bench/node_modules/.installed

# Every scenario, repeated, with uvloop and the brokers; prints the table, writes bench/results.json.
bench: bench-deps
	$(PY) -m bench $(BENCH_ARGS)

# The reduced suite, under a minute.
bench-quick: bench-deps
	$(PY) -m bench --quick $(BENCH_ARGS)

# Ten minutes of traffic and abuse with two kill -9s (bench/README.md, "Soak"); not part of
# `make test`. SOAK_ARGS="--duration 120" for a shorter one.
soak: setup
	$(PY) -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache $(GENERATED_MAN) bench/node_modules

# Shell completion scripts, generated from arqon's own parser (arqon completion bash|zsh).
build/completion/arqon: $(VENV)/.installed $(wildcard arqond/cli/*.py)
	install -d build/completion && $(PY) -m arqond.cli completion bash > $@.tmp && mv $@.tmp $@

build/completion/_arqon: $(VENV)/.installed $(wildcard arqond/cli/*.py)
	install -d build/completion && $(PY) -m arqond.cli completion zsh > $@.tmp && mv $@.tmp $@

# ---- Man pages, `make install`, and the deb and rpm packages (see README "Packages") ----
# The installed arqond runs on the system's own Python with its dependencies in a private dir.
SYSTEM_PYTHON ?= /usr/bin/python3
DEBIAN_PATH := /usr/sbin:/usr/bin:/sbin:/bin
PREFIX ?= /usr
BINDIR ?= $(PREFIX)/bin
PRIVATE_DIR ?= $(PREFIX)/lib/arqond
MANDIR ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
CATALOGDIR ?= $(PREFIX)/lib/systemd/catalog
SYSCONFDIR ?= /etc
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/vendor-completions
DOCDIR ?= $(PREFIX)/share/doc/arqond
# FileDescriptorStorePreserve= (systemd/fdstore-preserve.conf) needs systemd 254 or newer.
FDSTORE_PRESERVE ?= $(shell v=$$(systemctl --version 2>/dev/null | awk 'NR == 1 {print $$2}'); \
	[ "$${v:-0}" -ge 254 ] && echo yes || echo no)
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' arqond/__init__.py)
GENERATED_MAN := man/arqond.conf.5
MAN_PAGES := man/arqond.8 man/arqond.conf.5 man/arqon.1 man/arqond-moo.7

# arqond.conf(5): its key reference is rendered from arqond/config.py SCHEMA.
man/arqond.conf.5: man/arqond.conf.5.in man/gen_conf.py arqond/config.py
	PYTHONPATH=. $(SYSTEM_PYTHON) man/gen_conf.py man/arqond.conf.5.in > $@.tmp && mv $@.tmp $@

man: $(MAN_PAGES)

# Needs the package index (pip) unless PIP_FIND_LINKS/PIP_NO_INDEX point at local wheels.
# The shell completion is generated by the installed arqon itself, so it matches its parser;
# the examples are those that arqon(1) and arqond-moo(7) run (a shell Zgent handler, a bot).
# The cluster extra (nats-py, pure Python) comes along, so a node joins a cluster by its
# configuration alone; arqond loads it only then (arqond(8) CLUSTER).
install: man
	rm -rf $(DESTDIR)$(PRIVATE_DIR)
	PATH=$(DEBIAN_PATH) PIP_DISABLE_PIP_VERSION_CHECK=1 $(SYSTEM_PYTHON) -m pip install --quiet \
		--no-compile --no-warn-script-location --target $(DESTDIR)$(PRIVATE_DIR) '.[cluster]'
	rm -rf $(DESTDIR)$(PRIVATE_DIR)/bin
	install -d $(DESTDIR)$(BINDIR)
	for cmd in arqond:arqond.app arqon:arqond.cli; do \
		sed -e "s|@PYTHON@|$(SYSTEM_PYTHON)|" -e "s|@PRIVATE_DIR@|$(PRIVATE_DIR)|" \
			-e "s|@MODULE@|$${cmd#*:}|" packaging/launcher.in > $(DESTDIR)$(BINDIR)/$${cmd%%:*}; \
		chmod 0755 $(DESTDIR)$(BINDIR)/$${cmd%%:*}; \
	done
	install -D -m 0644 -t $(DESTDIR)$(UNITDIR) systemd/*.socket systemd/*.service
	install -D -m 0644 systemd/sysusers.d/arqond.conf $(DESTDIR)$(SYSUSERSDIR)/arqond.conf
	install -D -m 0644 systemd/tmpfiles.d/arqond.conf $(DESTDIR)$(TMPFILESDIR)/arqond.conf
	if [ -f systemd/arqond.catalog ]; then \
		install -D -m 0644 systemd/arqond.catalog $(DESTDIR)$(CATALOGDIR)/arqond.catalog; fi
	if [ -f systemd/fdstore-preserve.conf ] && [ "$(FDSTORE_PRESERVE)" = yes ]; then \
		install -D -m 0644 systemd/fdstore-preserve.conf \
			$(DESTDIR)$(UNITDIR)/arqond.service.d/fdstore-preserve.conf; fi
	install -D -m 0644 etc/arqond.toml $(DESTDIR)$(SYSCONFDIR)/arqond/arqond.toml
	install -D -m 0644 etc/logrotate.d/arqond $(DESTDIR)$(SYSCONFDIR)/logrotate.d/arqond
	for page in $(MAN_PAGES); do \
		install -D -m 0644 $$page $(DESTDIR)$(MANDIR)/man$${page##*.}/$${page#man/}; done
	install -d $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	for shell in bash:$(BASHCOMPDIR)/arqon zsh:$(ZSHCOMPDIR)/_arqon; do \
		PYTHONPATH=$(DESTDIR)$(PRIVATE_DIR) PYTHONDONTWRITEBYTECODE=1 $(SYSTEM_PYTHON) \
			-m arqond.cli completion $${shell%%:*} > $(DESTDIR)$${shell#*:} || exit 1; done
	install -d $(DESTDIR)$(DOCDIR)/examples
	install -m 0755 -t $(DESTDIR)$(DOCDIR)/examples examples/*.sh examples/*.py

PACKAGE_DIR ?= $(CURDIR)/build/package
DIST_DIR ?= $(CURDIR)/dist
# The tree being packaged: the files git knows (committed or not), without ignored ones.
package-source:
	rm -rf $(PACKAGE_DIR) && mkdir -p $(PACKAGE_DIR)/arqond-$(VERSION) $(DIST_DIR)
	git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C $(PACKAGE_DIR)/arqond-$(VERSION)

deb: package-source
	cp -r packaging/debian $(PACKAGE_DIR)/arqond-$(VERSION)/debian
	cd $(PACKAGE_DIR)/arqond-$(VERSION) && PATH=$(DEBIAN_PATH) dpkg-buildpackage -us -uc -b
	cp $(PACKAGE_DIR)/*.deb $(DIST_DIR)/
	PATH=$(DEBIAN_PATH) lintian --fail-on error $(PACKAGE_DIR)/*.changes

rpm: package-source
	tar -C $(PACKAGE_DIR) --exclude=arqond-$(VERSION)/debian -czf $(PACKAGE_DIR)/arqond-$(VERSION).tar.gz arqond-$(VERSION)
	cp systemd/sysusers.d/arqond.conf $(PACKAGE_DIR)/arqond.sysusers
	PATH=$(DEBIAN_PATH) rpmbuild -bb --nodeps --define "_topdir $(PACKAGE_DIR)/rpm" \
		--define "_sourcedir $(PACKAGE_DIR)" --define "_rpmdir $(DIST_DIR)" \
		--define "arqond_version $(VERSION)" packaging/rpm/arqond.spec
	if command -v rpmlint >/dev/null; then \
		rpmlint -r packaging/rpm/arqond.rpmlintrc $(DIST_DIR)/*/arqond-$(VERSION)-*.rpm; fi
