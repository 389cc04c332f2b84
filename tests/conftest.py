import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings

from btperp.io.tierfile import TierHistoryFile

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT / "datasets"

# No deadlines: property tests check outcomes, never speed (speed lives in `make bench`).
settings.register_profile("btperp", deadline=None, max_examples=300,
                          suppress_health_check=[HealthCheck.too_slow])
# `make mutation` runs the core's tests once per mutant: fewer, fixed examples, and no shrinking
# (a mutant is killed by the first failing example; shrinking it only costs time).
settings.register_profile("mutation", parent=settings.get_profile("btperp"), max_examples=25,
                          derandomize=True, database=None,
                          phases=(Phase.explicit, Phase.reuse, Phase.generate))
settings.load_profile(os.environ.get("BTPERP_HYPOTHESIS", "btperp"))


def pytest_collection_modifyitems(config, items):
    """Under `make mutation`, while a mutant is tested: the fastest tests first, as mutmut's stats
    run timed them. mutmut stops at the first failure (-x), so a killed mutant is usually killed by
    a test of a few milliseconds instead of whichever slow property test came first."""
    if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        return
    try:
        with open("mutmut-stats.json", encoding="utf-8") as handle:     # mutmut runs in mutants/
            duration = json.load(handle)["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return
    items.sort(key=lambda item: duration.get(item.nodeid, 0.0))


@pytest.fixture(scope="session")
def tier_file() -> TierHistoryFile:
    return TierHistoryFile.read(DATASETS / "binance-usdm" / "tier_history.json")


@pytest.fixture(scope="session")
def tier_json() -> dict:
    with open(DATASETS / "binance-usdm" / "tier_history.json", encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="session")
def btc_table(tier_file):
    """BTC/USDT:USDT as first observed (2022-02-05): 0.4 % / 125x up to 50,000, then 0.5 % (cum 50) ..."""
    return tier_file.history("BTCUSDT").versions[0][1]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Tests never touch the network: an internet socket that tries to connect fails the test
    (local sockets, which multiprocessing uses, are left alone)."""
    import socket
    connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise RuntimeError(f"a test tried to reach the network ({address!r})")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
