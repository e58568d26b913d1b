# Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export YOLO_OFFLINE := 1

.PHONY: install demo test bench clean lock

LOCK := requirements.lock

# The exact versions CI tests with (requirements.lock), then pulmo itself; pyproject.toml keeps
# compatible ranges for installing pulmo into an existing environment.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

# Re-resolve pyproject.toml's ranges in a fresh environment and pin the result.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e ".[dev]"
	(echo "# Exact versions CI installs and tests with (make test / make demo); regenerate with 'make lock'."; \
	 .lock-venv/bin/python -m pip freeze --exclude-editable) > $(LOCK)
	rm -rf .lock-venv

install: $(STAMP)

# Main job on bundled defaults: the front door picks each bundled (synthetic) sample's task
# (lung sounds, respiratory rate for the 2 kHz breath recording, chest X-ray, detection for
# the 16-bit scan) and writes a JSON result and an HTML report per sample; with the shared
# ICBHI copy present it also re-scores the lung-sound model on the first test recordings.
demo: $(STAMP)
	$(BIN)/pulmo models
	$(BIN)/pulmo analyze src/pulmo/assets/demo_lung_sounds.flac src/pulmo/assets/demo_breath.flac \
		src/pulmo/assets/demo_body_scan_16bit.png --out out/demo
	@echo "The chest X-ray sample is a drawing (no real film may be shipped): the chest X-ray gate must refuse it."
	@$(BIN)/pulmo analyze src/pulmo/assets/demo_cxr.png --out out/demo; \
		grep -q '"code": "not_chest_xray"' out/demo/demo_cxr.json && echo "refused, as it should be: out/demo/demo_cxr.json"
	@echo "results: out/demo/<sample>.json, reports to read: out/demo/<sample>.html (with their figures)"
	@if [ -d "$${PULMO_DATA:-../shared/data}/icbhi" ]; then \
		$(BIN)/pulmo evaluate --task lung-sounds --split test --limit 20; \
	else echo "(no ICBHI data at $${PULMO_DATA:-../shared/data}/icbhi: skipping the real-data check)"; fi

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/icbhi_attentive_resnet.py --seeds 0 1 2 --jobs 2
	$(BIN)/python benchmarks/icbhi_conv_vit.py --seeds 0 1 2 --jobs 2
	$(BIN)/python benchmarks/icbhi_multidataset.py pretrain
	$(BIN)/python benchmarks/icbhi_multidataset.py run --jobs 2
	$(BIN)/python benchmarks/icbhi_multidataset.py report --bundle src/pulmo/assets/lung_sounds_small_cnn.pt

clean:
	rm -rf $(VENV) out runs .pytest_cache
