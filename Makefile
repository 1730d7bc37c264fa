# The two commands a newcomer needs (README.md):
#   sudo make run    the main job on the shipped default config
#   sudo make test   every test, the ones that load BPF programs included
.PHONY: setup setup-test run test bench clean

VENV := .venv
PY   := $(VENV)/bin/python

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

# the daemon in the foreground on the shipped default config (packaging/config.yaml:
# the rule pack in rules/, alerts to the journal, state in /var/lib/cgwatch,
# http://127.0.0.1:9477/); Ctrl-C stops it. `cgwatch top` is the live table.
run: setup
	$(VENV)/bin/cgwatch run --config packaging/config.yaml

test: setup-test
	$(VENV)/bin/ruff check daemon tests bench
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup-test
	$(PY) bench/bench_probes.py

clean:
	rm -rf $(VENV) build *.egg-info daemon/*.egg-info

# --- install as a service (docs/install.md, "Installing as a service") -------
#   sudo make install      /opt/cgwatch (venv, bin/cgwatch, rules/), the unit,
#                          /etc/cgwatch/config.yaml (only if there is none) and
#                          /etc/cgwatch/rules.d/
#   sudo make uninstall    removes the program and the unit; keeps /etc/cgwatch
#                          and /var/lib/cgwatch, as packages do
# Every directory can be overridden: make install PREFIX=/srv/cgwatch ...
# UNITDIR is /etc/systemd/system, the administrator's unit directory: this is
# not a distribution package, and systemd looks there on every distribution
# (/usr/local/lib/systemd/system is not searched by all of them).
PREFIX     ?= /opt/cgwatch
SYSCONFDIR ?= /etc
UNITDIR    ?= /etc/systemd/system
DATADIR    ?= $(PREFIX)/rules
CONFDIR    := $(SYSCONFDIR)/cgwatch
# Debian's python: the one python3-bpfcc and python3-systemd install into.
SYSPYTHON  ?= /usr/bin/python3
# sd_booted(): systemd is PID 1 (not on machines like our CI's).
SYSTEMD_RUNNING = test -d /run/systemd/system

.PHONY: install uninstall

install: setup
	@test -n "$(PREFIX)" && test "$(PREFIX)" != / || { echo "install: refusing PREFIX='$(PREFIX)'" >&2; exit 2; }
	@echo "install: cgwatch into $(PREFIX) (venv from $(SYSPYTHON), with PyPI dependencies)"
	@# a venv that still imports bcc is kept: an upgrade then only reinstalls cgwatch
	$(PREFIX)/venv/bin/python -c 'import bcc' 2>/dev/null || { rm -rf $(PREFIX)/venv && \
	    $(SYSPYTHON) -m venv --system-site-packages $(PREFIX)/venv; }
	$(PREFIX)/venv/bin/pip install -q --disable-pip-version-check --upgrade .
	rm -rf build
	touch $(PREFIX)/.cgwatch-install
	install -d $(PREFIX)/bin
	ln -sfn $(PREFIX)/venv/bin/cgwatch $(PREFIX)/bin/cgwatch
	rm -rf $(DATADIR)
	install -d $(DATADIR)
	cp -R rules/. $(DATADIR)/
	install -d $(UNITDIR)
	sed -e 's|/opt/cgwatch/bin/cgwatch|$(PREFIX)/bin/cgwatch|' \
	    -e 's|/etc/cgwatch/config.yaml|$(CONFDIR)/config.yaml|' \
	    packaging/systemd/cgwatch.service > $(UNITDIR)/cgwatch.service
	chmod 0644 $(UNITDIR)/cgwatch.service
	install -d -m 0755 $(CONFDIR) $(CONFDIR)/rules.d
	@if [ -e $(CONFDIR)/config.yaml ]; then \
	    echo "install: keeping $(CONFDIR)/config.yaml (the new default is $(PREFIX)/config.yaml.default)"; \
	else \
	    sed -e 's|^  - \.\./rules$$|  - $(DATADIR)|' -e 's|^  #- rules\.d$$|  - rules.d|' \
	        packaging/config.yaml > $(CONFDIR)/config.yaml.tmp && \
	    chmod 0600 $(CONFDIR)/config.yaml.tmp && mv $(CONFDIR)/config.yaml.tmp $(CONFDIR)/config.yaml && \
	    echo "install: wrote $(CONFDIR)/config.yaml"; \
	fi
	sed -e 's|^  - \.\./rules$$|  - $(DATADIR)|' -e 's|^  #- rules\.d$$|  - rules.d|' \
	    packaging/config.yaml > $(PREFIX)/config.yaml.default
	@# rules.d must hold a rule file: an empty directory is an error when rules load.
	@if ! ls $(CONFDIR)/rules.d/*.yaml $(CONFDIR)/rules.d/*.yml >/dev/null 2>&1; then \
	    printf '%s\n' "# Your own rules (docs/rules.md); every *.yaml here is loaded after the" \
	        "# shipped pack. Keep at least one rule file here: an empty rules.d is an error." \
	        "rules: []" > $(CONFDIR)/rules.d/local.yaml; \
	fi
	@if $(SYSTEMD_RUNNING); then systemctl daemon-reload; \
	    echo "install: now: systemctl enable --now cgwatch"; \
	else echo "install: systemd is not PID 1 here; skipped systemctl daemon-reload"; fi
	$(PREFIX)/bin/cgwatch rules check --config $(CONFDIR)/config.yaml

uninstall:
	@test -e $(PREFIX)/.cgwatch-install || { echo "uninstall: $(PREFIX) is not a cgwatch install (no .cgwatch-install)" >&2; exit 2; }
	@if $(SYSTEMD_RUNNING) && [ -e $(UNITDIR)/cgwatch.service ]; then systemctl disable --now cgwatch.service || true; fi
	rm -f $(UNITDIR)/cgwatch.service
	rm -rf $(DATADIR) $(PREFIX)
	@if $(SYSTEMD_RUNNING); then systemctl daemon-reload; fi
	@echo "uninstall: kept $(CONFDIR) and /var/lib/cgwatch (remove them by hand to forget config and alert history)"
