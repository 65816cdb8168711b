"""Re-run chosen notebooks in full mode and compare every non-timing metric with the committed one (maintainers).

    python scripts/reproduce.py 06 10          # or: make reproduce NB="06 10"
    python scripts/reproduce.py 10 --compare-only   # compare the last rerun again without running

The rerun goes through run_all.py into its own build folder (build/reproduce/), so artifacts/ and the README are never
touched. Each metric is held to the tolerance of its unit (helpers/course/reproduce.py); times are shown as a ratio to
the committed ones. Exit status 0 when every non-timing metric is within its tolerance, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers.course.reproduce import committed_metrics, compare, report  # noqa: E402
from run_all import SelectionError, discover, select  # noqa: E402

BUILD = ROOT / "build" / "reproduce"


def main(argv: list[str] | None = None) -> int:
    """Rerun (unless --compare-only), compare, print the table; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", metavar="NB", help="notebooks to rerun (number or name)")
    parser.add_argument("--compare-only", action="store_true", help="compare the last rerun without running again")
    args = parser.parse_args(argv)
    try:
        chosen = select(discover(), args.notebooks, None)
    except SelectionError as err:
        parser.error(str(err))
    rerun = BUILD / "full" / "artifacts"
    if not args.compare_only:
        shutil.rmtree(BUILD, ignore_errors=True)
        cmd = [sys.executable, str(ROOT / "run_all.py"), "--build-dir", str(BUILD), "--no-html", "--only"]
        done = subprocess.run([*cmd, *(p.stem for p in chosen)], cwd=ROOT)
        if done.returncode != 0:
            print(f"the rerun failed (exit {done.returncode}): nothing to compare", file=sys.stderr)
            return 1
    if not (rerun / "metrics.json").exists():
        print(f"no rerun in {rerun.relative_to(ROOT)}: run without --compare-only first", file=sys.stderr)
        return 1
    rows = compare(
        committed_metrics(ROOT / "artifacts"),
        json.loads((rerun / "metrics.json").read_text()),
        {p.stem for p in chosen},
    )
    print(report(rows))
    return 0 if all(r.within for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
