# Vulnerability audit of the one pin file (needs PyPI's JSON API or OSV: internet).
.PHONY: audit
AUDIT_VENV := $(HOME)/.cache/featurizer/pip-audit

audit:  ## pip-audit of constraints.txt (needs PyPI's JSON API)
	test -x $(AUDIT_VENV)/bin/pip-audit || { $(PYTHON) -m venv $(AUDIT_VENV) && $(AUDIT_VENV)/bin/pip install -q pip-audit; }
	grep -v '^#' constraints.txt > $(AUDIT_VENV)/requirements.txt
	$(AUDIT_VENV)/bin/pip-audit -r $(AUDIT_VENV)/requirements.txt --no-deps --disable-pip --progress-spinner off
