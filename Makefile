# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SHARED ?= ../shared/data/binance-usdm

.PHONY: install test demo bench datasets mutation mutation-save clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	@echo "== A sweep: breakout entry channels x leverages x half-year windows (examples/sweep.toml) =="
	$(BIN)/btperp sweep examples/sweep.toml --out out/sweep --no-progress
	@echo
	@echo "== Which leverage would a Donchian breakout have survived? BTCUSDT 4h, all bundled data =="
	$(BIN)/btperp compare --strategy breakout --symbol BTCUSDT --timeframe 4h --out out/compare
	@echo
	@echo "== Each of those liquidations explained, and when a last-price trigger would have fired =="
	$(BIN)/btperp audit history out/compare
	@echo
	@echo "== Backtests with btperp's broker on the bundled data (examples/perp_backtest.py) =="
	$(BIN)/python examples/perp_backtest.py
	$(BIN)/btperp history show out/demo-history
	@echo
	@echo "== Binance FAQ example: isolated, 500 USDT margin, long 0.02 BTC at 50,000 =="
	$(BIN)/btperp calc --symbol BTCUSDT --side long --size 0.02 --entry 50000 --margin 500
	@echo
	@echo "== A cross-margin account with two positions (examples/account.json) =="
	$(BIN)/btperp calc --account examples/account.json
	@echo
	@echo "== ETHUSDT 2021-05-19: a 2x long the mark never liquidated, reported liquidated at 13:12 =="
	$(BIN)/btperp audit position --symbol ETHUSDT --side long --entry-time "2021-05-18 00:00" \
	    --entry-price 3283.23 --margin 1000 --leverage 2 --end 2021-05-21 \
	    --reported-time "2021-05-19 13:12" --reported-price 1650 --detail 1m --plot out/audit-eth-2x.png
	@echo
	@echo "== The same day at 3x, replayed on the bundled 1-minute marks: which minute liquidated it? =="
	$(BIN)/btperp audit position --symbol ETHUSDT --side long --entry-time "2021-05-18 00:00" \
	    --entry-price 3283.23 --margin 1000 --leverage 3 --end 2021-05-21 \
	    --reported-time "2021-05-19 12:51" --detail 1m

bench: $(STAMP)
	$(BIN)/python bench/run.py

# Developers only: rebuild datasets/ from the shared raw data with the project's own code.
datasets: $(STAMP)
	$(BIN)/btperp data import-freqtrade $(SHARED) --exchange binance-usdm
	$(BIN)/btperp data import-tiers $(SHARED)/tier_history.json --exchange binance-usdm
	$(BIN)/btperp data import-klines $(SHARED)/mark-1m/ETHUSDT-mark-1m-2021-05-19.csv \
	    --symbol ETHUSDT --kind mark --timeframe 1m --exchange binance-usdm

# Developers only (not in CI): mutation testing of the pure core with mutmut (see README).
# mutmut imports mutated code from src/, so the package is copied to build/mutation/src/btperp.
# build/mutation is kept between runs: mutmut re-runs only the mutants of functions that changed.
# MUTANTS='btperp.margin.*' runs only the mutants matching those patterns, checked ones again too
# (mutmut's rule for named mutants); without it, only the unchecked ones run.
MUT := build/mutation
RESULTS := bench/mutation_results
mutation: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	mkdir -p $(MUT)/src $(MUT)/mutants/src/btperp
	rm -rf $(MUT)/src/btperp $(MUT)/tests $(MUT)/strategies $(MUT)/examples
	cp -r plugin/btperp $(MUT)/src/btperp
	cp -r tests strategies examples pyproject.toml $(MUT)/
	ln -sfn $(CURDIR)/datasets $(MUT)/datasets
	for f in $(RESULTS)/*.meta.gz; do m=$(MUT)/mutants/src/btperp/$$(basename $$f .gz); \
	    test -e $$m || gunzip -c $$f > $$m; done
	cd $(MUT) && BTPERP_DATASETS=$(CURDIR)/datasets BTPERP_HYPOTHESIS=mutation \
	    $(CURDIR)/$(BIN)/mutmut run --max-children $${MUTATION_JOBS:-2} $(MUTANTS); \
	    status=$$?; cd $(CURDIR) && $(MAKE) --no-print-directory mutation-save && exit $$status
	$(BIN)/python bench/mutation_report.py $(MUT)

# The results so far (mutmut's per-module files, a few KB gzipped), committed so that a run resumes
# on a fresh clone: mutmut keeps a result while its function's code is unchanged.
mutation-save:
	mkdir -p $(RESULTS)
	for m in $(MUT)/mutants/src/btperp/*.py.meta; do gzip -n -c $$m > $(RESULTS)/$$(basename $$m).gz; done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build plugin/*.egg-info
