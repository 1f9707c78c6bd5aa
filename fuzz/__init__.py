"""Fuzzing ggtool's readers: seeded, structure-aware mutators per input format, run in a worker
process with bounded memory and time; anything but a GgtoolError (or success) is a bug.

    fuzz/seeds.py      valid inputs built from the tiny generated models (tests/tinymodels)
    fuzz/mutators.py   byte, JSON, GGUF, safetensors and protobuf mutators (a random.Random in)
    fuzz/targets.py    one Target per reader: its seeds, its mutator, what it runs
    fuzz/worker.py     the worker: rlimit'd memory, a deadline per input, one JSON line out
    fuzz/harness.py    drives workers; judges each outcome; keeps failures in fuzz/corpus/
    fuzz/faults.py     write faults (ENOSPC, EIO) at a chosen byte offset, for the writer tests
    fuzz/run.py        long campaigns:  python -m fuzz.run --seconds 600 [--target gguf]

Adding a reader is one `@target(...)` in targets.py: a seed function and a mutator.
"""
