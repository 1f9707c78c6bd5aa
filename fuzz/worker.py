"""The fuzz worker: reads one request per line on stdin, runs the target on the input folder,
answers one JSON line. Started by fuzz.harness; never run by hand.

Bounded memory: RLIMIT_AS at GGTOOL_FUZZ_MEM_MB (default 3072) above what the loaded libraries
take: an input that makes ggtool allocate what its header claims ends in MemoryError, which is a
bug like any other exception.
Bounded time: faulthandler dumps every thread's stack and exits when an input runs past its
deadline; the harness reads the dump and calls the input a hang.
"""

from __future__ import annotations

import faulthandler
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path


def _address_space() -> int:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        return 0


def main() -> None:
    # Load the heavy libraries first (a CUDA build of llama.cpp reserves a lot of address space
    # when it loads), then allow GGTOOL_FUZZ_MEM_MB more than that.
    import importlib

    for mod in ("numpy", "gguf", "tokenizers", "sentencepiece", "jinja2", "ggtool.convert", "ggtool.tokenizer",
                "llama_cpp.llama_chat_format"):
        try:
            importlib.import_module(mod)
        except Exception:  # noqa: BLE001 - a target that needs it reports it
            pass
    mem = _address_space() + (int(os.environ.get("GGTOOL_FUZZ_MEM_MB", "3072")) << 20)
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    answer = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the library prints goes to stderr, not into the answers
    sys.stdout = sys.stderr
    from ggtool.errors import GgtoolError

    from .targets import TARGETS

    answer.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        t = TARGETS[req["target"]]
        faulthandler.dump_traceback_later(req["timeout"], exit=True)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            t.run(Path(req["folder"]))
            res = {"outcome": "ok"}
        except GgtoolError as e:
            res = {"outcome": "error", "cls": type(e).__name__, "message": e.message, "hint": e.hint}
        except BaseException as e:  # noqa: BLE001 - the point: anything else is a bug
            res = {"outcome": "bug", "cls": type(e).__name__, "message": str(e)[:2000],
                   "traceback": "".join(traceback.format_exception(e))[-6000:]}
        faulthandler.cancel_dump_traceback_later()
        res["cpu"] = time.process_time() - cpu0
        res["wall"] = time.perf_counter() - wall0
        answer.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
