# graspvla_ros — the two commands a user needs are `make demo` and `make test`;
# both run `make setup` first, which is idempotent.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ISOLATED := scripts/isolated
APT_PKGS := libusb-1.0-0 libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 iproute2 util-linux
PYTEST_ARGS ?=

.PHONY: setup apt venv test demo bench clean

setup: apt venv

apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.py scripts/build_tf2_msgs
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	scripts/build_tf2_msgs $(VENV)
	$(PY) -m pip check
	@touch $@

# tests/test_robot_install.py (marker `pypi`) asks PyPI's resolver whether requirements-robot.txt
# installs on apt ROS 2's Pythons; the loopback-only namespace cannot reach PyPI, so it runs first,
# on the host's network. It runs pip only, no ROS/DDS process; every other test runs inside
# scripts/isolated, and tests/conftest.py refuses anything else outside it.
test: setup
	$(PY) -m pytest -m pypi tests/test_robot_install.py
	$(ISOLATED) $(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(ISOLATED) $(PY) -m graspvla_ros.demo

bench: setup
	$(ISOLATED) $(PY) -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
