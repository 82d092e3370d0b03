# idolstream: `make demo` sets everything up and runs the main job; `make test` runs the tests.
# Setup is idempotent: the virtualenv is rebuilt only when pyproject.toml or the lock change,
# and packages come from pip's/uv's caches after the first install.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UV_VERSION := 0.13.8

.PHONY: setup system-packages demo test bench check-grafana check-k8s kafka-up kafka-down lock clean

# Debian packages the tests drive: chromium (the overlay page test; Playwright starts it by
# path), prometheus (promtool checks the alert rules), kcat (a librdkafka producer, the
# client most non-Python bots are built on) and fonts-noto-cjk (the overlay's Chinese and
# Japanese text must render as glyphs, not boxes).
DEB_PACKAGES := chromium prometheus kcat fonts-noto-cjk
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

setup: $(STAMP) system-packages

system-packages:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get install -y -q --no-install-recommends $$missing >/dev/null \
	    || { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q --no-install-recommends $$missing >/dev/null; }; \
	fi

$(STAMP): pyproject.toml requirements.lock
	@command -v java >/dev/null || { echo "Java 17+ is required (the local Kafka broker runs on it)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is required (it resolves the Kafka jars)"; exit 1; }
	test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync -q --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/idolstream demo

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python bench/fast_path.py

# Dashboards (shape, variables, every query parses as PromQL) and provisioning; alert rules:
# promtool's syntax check, then its unit tests (each alert fires when it should).
check-grafana: setup
	$(BIN)/python grafana/check.py
	promtool check rules grafana/alerts/idolstream.rules.yml
	cd grafana/alerts && promtool test rules idolstream.rules.test.yml

# Kubernetes manifests: render each overlay with kustomize, then validate offline (core kinds
# against kubernetes-validate's schemas, Strimzi/KEDA/Prometheus Operator kinds against their
# CRDs in CRD_DIR) and check them against the code (topics, scaling caps, alert rules, probes).
KUSTOMIZE_VERSION := v5.7.1
KUSTOMIZE := build/bin/kustomize
K8S_OVERLAYS := dev prod
K8S_VERSION ?= 1.31
CRD_DIR ?= ../shared/crds

$(KUSTOMIZE):
	GOBIN=$(CURDIR)/build/bin go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

check-k8s: $(STAMP) $(KUSTOMIZE)
	@mkdir -p build/k8s
	@for overlay in $(K8S_OVERLAYS); do \
	  $(KUSTOMIZE) build k8s/overlays/$$overlay > build/k8s/$$overlay.yaml || exit 1; \
	done
	$(BIN)/python k8s/check.py --crd-dir $(CRD_DIR) --kubernetes-version $(K8S_VERSION) \
	  $(foreach overlay,$(K8S_OVERLAYS),build/k8s/$(overlay).yaml)

kafka-up: setup
	$(BIN)/idolstream kafka up

kafka-down: setup
	$(BIN)/idolstream kafka down

# Re-resolve the pinned versions after editing pyproject.toml's dependencies.
lock:
	$(BIN)/uv pip compile -q pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:
	-$(BIN)/idolstream kafka down
	rm -rf $(VENV) var .pytest_cache
