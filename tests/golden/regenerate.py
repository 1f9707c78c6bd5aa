"""Rewrite the golden files (tests/golden/<Architecture>.json). Run only on purpose, when a
family's output is meant to change, and say why in the commit:

    python tests/golden/regenerate.py                 # every family
    python tests/golden/regenerate.py Phi3ForCausalLM # one
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.golden_gguf import CASES, build, differences, golden_path  # noqa: E402


def main(argv: list[str]) -> int:
    archs = argv or list(CASES)
    unknown = [a for a in archs if a not in CASES]
    if unknown:
        print(f"unknown architecture(s) {unknown}; known: {', '.join(CASES)}", file=sys.stderr)
        return 2
    for arch in archs:
        with tempfile.TemporaryDirectory() as d:
            got = build(arch, Path(d))
        path = golden_path(arch)
        if path.exists():
            diff = differences(json.loads(path.read_text()), got)
            print(f"{arch}: {len(diff)} difference(s)" + "".join(f"\n  {x}" for x in diff[:20]), file=sys.stderr)
        path.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
