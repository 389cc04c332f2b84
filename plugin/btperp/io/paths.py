"""Where the datasets live: ``$BTPERP_DATASETS``, else the project's ``datasets/`` folder."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "BTPERP_DATASETS"


def datasets_dir(override: "str | os.PathLike[str] | None" = None) -> Path:
    """The datasets root: ``override``, ``$BTPERP_DATASETS``, the checkout's ``datasets/``, or ./datasets."""
    if override:
        return Path(override)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    checkout = Path(__file__).resolve().parents[3] / "datasets"   # plugin/btperp/io/ -> repo root
    if checkout.is_dir():
        return checkout
    return Path.cwd() / "datasets"


def exchange_dir(exchange: str, root: "str | os.PathLike[str] | None" = None) -> Path:
    return datasets_dir(root) / exchange


def tier_history_path(exchange: str, root: "str | os.PathLike[str] | None" = None) -> Path:
    """``datasets/<exchange>/tier_history.json``."""
    return exchange_dir(exchange, root) / "tier_history.json"
