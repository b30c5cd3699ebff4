"""Every predictor backtest in one run: task ladder, capability boundary, mixture regression, the
composed forecast end to end, SMI, recipes.

    python bench/predictors.py [--only ladder,boundary,mixture,forecast,smi,recipes]

Needs ../shared/data (the published results the predictors are validated on).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

PARTS = ["ladder", "boundary", "mixture", "forecast", "smi", "recipes"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated subset of " + ", ".join(PARTS))
    args = ap.parse_args()
    for part in args.only.split(","):
        print(f"\n{'=' * 30} {part} {'=' * 30}", flush=True)
        started = time.time()
        module = importlib.import_module(f"predictors_{part}")
        saved = sys.argv
        sys.argv = [f"predictors_{part}.py"]
        try:
            module.main()
        finally:
            sys.argv = saved
        print(f"[{part}: {time.time() - started:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
