"""Re-render benchmarks' doc pages and stored tables from their rows, measuring nothing.

    python benchmarks/publish.py attacks defenses robust      # docs/attacks.md, docs/defenses.md, docs/robust.md

For each benchmark named: its Markdown view of ``benchmarks/results/NAME.json`` goes to ``docs/NAME.md`` (figures
to ``docs/figures/``) and is stored with the rows, figures included, which is what ``robusthash report
benchmarks/results/NAME.json`` shows. Run after changing a view, or when a benchmark's rows landed without
``--markdown``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from common import RESULTS, ROOT, Rows

DOCS = ROOT / "docs"


def _views() -> dict[str, Callable[[list[dict]], str]]:
    import bench_cascade_stops
    import bench_certify
    import bench_robust
    import bench_threads
    import views

    figures = DOCS / "figures"
    return {
        "attacks": lambda rows: views.attack_benchmark_markdown(rows, figures),
        "defenses": lambda rows: views.defense_benchmark_markdown(rows, figures),
        "training": views.training_markdown,
        "universality": views.universality_markdown,
        "robust": bench_robust.markdown,
        "cascade_stops": bench_cascade_stops.markdown,
        "certify": bench_certify.markdown,
        "threads": bench_threads.markdown,
    }


def main() -> int:
    known = _views()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "names", nargs="+", choices=sorted(known), metavar="NAME", help=", ".join(sorted(known))
    )
    args = parser.parse_args()
    for name in args.names:
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            print(f"{path} not found: run benchmarks/bench_{name}.py first", file=sys.stderr)
            return 2
        rows = Rows(path, "", ())
        rows.publish(known[name](rows.rows), DOCS / f"{name}.md")
        print(
            f"{name}: docs/{name}.md and {path.relative_to(ROOT)} ({len(rows.doc['figures'] or {})} figures)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
