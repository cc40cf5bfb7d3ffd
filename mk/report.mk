# `featurizer report` (job/featurizer/reporting/). Its tests (tests/report) run in `make test`
# and install Chromium themselves through hack/chromium.sh, so CI needs no extra target.
#   make report            report of REPORT_OF (default: output/sample, what `make run` writes)
#   make report-browser    install headless Chromium (Debian `chromium`; idempotent)
REPORT_OF ?= output/sample

.PHONY: report report-browser

report: venv  ## featurizer report of REPORT_OF (default output/sample)
	$(BIN)/featurizer report $(REPORT_OF) $(ARGS)

report-browser:  ## install headless Chromium for the report tests
	bash hack/chromium.sh
