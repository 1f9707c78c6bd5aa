"""Faults in writers and processes: kill -9 at random points, ENOSPC and EIO at random write
offsets, a failing fsync or rename, a read-only destination.

After each: no file that looks complete (the target is either what the user had, byte for
byte, or the complete new file), partial files are `<name>.<8 hex>.incomplete` and never
parse as a GGUF, the next run succeeds and removes them, and nothing the user had is lost.
The loops print their counts (shown in the terminal summary line of each test).
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fuzz.faults import write_faults
from ggtool.convert import convert
from ggtool.errors import CorruptFile, GgtoolError, InputError, OutputError
from ggtool.formats import gguf_writer
from ggtool.formats.gguf_reader import GGUFFile
from tests import tinymodels as tm

REPO = Path(__file__).resolve().parent.parent
PARTIAL = re.compile(r"^m\.gguf\.[0-9a-f]{8}\.incomplete$")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A checkpoint big enough that writing takes a while, its F16 GGUF, and the reference
    outputs: what convert and quantize write (deterministic) and what the user had before."""
    d = tmp_path_factory.mktemp("faults")
    ck = tm.make_checkpoint(d / "ck", "llama", hidden=256, layers=4, heads=4, kv_heads=2)
    f16 = convert(ck, d / "in.F16.gguf", "F16", progress=False).path
    w = {"ck": ck, "f16": f16}
    for cmd in COMMANDS:
        w[f"ref-{cmd}"] = run_library(cmd, w, d / f"ref-{cmd}.gguf").path.read_bytes()
    w["old"] = convert(ck, d / "old.gguf", "Q4_0", rules="llama.cpp", progress=False).path.read_bytes()
    return w


COMMANDS = {  # what a user runs; each writes <out>/m.gguf, identical to work["ref-<cmd>"]
    "convert": lambda w, out: ["convert", str(w["ck"]), "-o", str(out), "--quant", "Q8_0", "--rules", "llama.cpp", "-q"],
    "quantize": lambda w, out: ["quantize", str(w["f16"]), str(out), "--quant", "Q8_0", "--rules", "llama.cpp", "-q"],
}


def run_library(cmd: str, w: dict, out: Path):
    src = w["ck"] if cmd == "convert" else w["f16"]
    return convert(src, out, "Q8_0", rules="llama.cpp", progress=False)


def check_folder(folder: Path, w: dict, ref: bytes) -> dict:
    """The target is the old file or the complete new one; the rest are recognisable partials
    that do not parse as a GGUF unless complete (killed between fsync and rename)."""
    target = folder / "m.gguf"
    data = target.read_bytes()
    assert data in (w["old"], ref), "the target is neither the user's file nor the complete output"
    partials = [p for p in folder.iterdir() if p.name != "m.gguf"]
    complete_partials = 0
    for p in partials:
        assert PARTIAL.match(p.name), f"unexpected file {p.name}"
        assert not p.name.endswith(".gguf")
        try:
            GGUFFile(p).close()
            complete_partials += 1  # whole but never renamed: still named .incomplete
        except CorruptFile:
            pass
    return {"new": data == ref, "partials": len(partials), "complete_partials": complete_partials}


@pytest.mark.slow
@pytest.mark.parametrize("cmd,kills", [("convert", 50), ("quantize", 25)])
def test_kill_9_at_random_points(cmd, kills, work, tmp_path, say):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "m.gguf"
    argv = [sys.executable, "-m", "ggtool", *COMMANDS[cmd](work, target)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("GGTOOL_DEBUG", None)
    # one full run: how long the whole command and its write take
    target.write_bytes(work["old"])
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t_write = None
    while proc.poll() is None:
        if t_write is None and any(p.suffix == ".incomplete" for p in out.iterdir()):
            t_write = time.monotonic()
        time.sleep(0.002)
    t_full = time.monotonic() - t0
    t_write = time.monotonic() - (t_write or t0)
    ref = work[f"ref-{cmd}"]
    assert proc.returncode == 0 and target.read_bytes() == ref

    rng = random.Random(f"kill-{cmd}")
    n = {"during write": 0, "anywhere": 0, "finished first": 0, "partials left": 0, "old kept": 0,
         "new complete": 0, "complete partials": 0, "reruns ok": 0}
    for i in range(kills):
        target.write_bytes(work["old"])
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if rng.random() < 0.5:  # while the partial file is being written
            n["during write"] += 1
            t_end = time.monotonic() + 3 * t_full + 5
            while proc.poll() is None and time.monotonic() < t_end and \
                    not any(p.suffix == ".incomplete" for p in out.iterdir()):
                time.sleep(0.001)
            time.sleep(rng.uniform(0, t_write))
        else:                   # anywhere: start-up, planning, writing, committing
            n["anywhere"] += 1
            time.sleep(rng.uniform(0, t_full))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        else:
            n["finished first"] += 1
        proc.wait()
        seen = check_folder(out, work, ref)
        n["partials left"] += seen["partials"]
        n["complete partials"] += seen["complete_partials"]
        n["new complete" if seen["new"] else "old kept"] += 1
        # the next run succeeds and removes what the killed one left
        run_library(cmd, work, target)
        assert target.read_bytes() == ref
        assert [p.name for p in out.iterdir()] == ["m.gguf"], "the rerun left partial files"
        n["reruns ok"] += 1
    say(f"{kills} kill -9 of `ggtool {cmd}` (full run {t_full:.2f} s, write {t_write:.2f} s): "
        + ", ".join(f"{v} {k}" for k, v in n.items()) + "; 0 finished-looking partial files")
    assert n["reruns ok"] == kills


@pytest.mark.parametrize("cmd", ["convert", "quantize"])
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
def test_write_error_at_random_offsets(cmd, err, work, tmp_path, say):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "m.gguf"
    size = len(work[f"ref-{cmd}"])
    rng = random.Random(f"{cmd}-{err}")
    offsets = sorted({0, 1, 23, size - 1} | {rng.randrange(size) for _ in range(21)})
    name = errno.errorcode[err]
    for at in offsets:
        target.write_bytes(work["old"])
        with write_faults(out, at_byte=at, err=err) as st:
            with pytest.raises(OutputError) as e:
                run_library(cmd, work, target)
        assert st["faults"] >= 1
        assert e.value.hint and str(target) in e.value.message
        if err == errno.ENOSPC:
            assert "no space left" in e.value.message
        assert os.listdir(out) == ["m.gguf"] and target.read_bytes() == work["old"], at
    run_library(cmd, work, target)
    assert target.read_bytes() == work[f"ref-{cmd}"]
    say(f"{len(offsets)} {name} faults in `{cmd}` at byte offsets {offsets[0]}..{offsets[-1]} of {size}: "
        f"{len(offsets)} OutputErrors with a hint, 0 partial files left, the user's file intact each time, "
        "the next run succeeded")


@pytest.mark.parametrize("fault", ["fsync", "rename", "open"])
def test_commit_and_open_failures(fault, work, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "m.gguf"
    target.write_bytes(work["old"])
    kw = {"fsync": {"fsync_err": errno.EIO}, "rename": {"replace_err": errno.EIO},
          "open": {"open_err": errno.EROFS}}[fault]
    with write_faults(out, **kw):
        with pytest.raises(OutputError) as e:
            run_library("convert", work, target)
    assert e.value.hint
    if fault == "open":
        assert "read-only file system" in e.value.message
    assert os.listdir(out) == ["m.gguf"] and target.read_bytes() == work["old"]


def test_read_only_destination_is_refused_before_anything(work, tmp_path, monkeypatch):
    """The up-front check (statvfs says read-only): nothing is opened, the old file stays."""
    out = tmp_path / "out"
    out.mkdir()
    target = out / "m.gguf"
    target.write_bytes(work["old"])
    monkeypatch.setattr(gguf_writer, "_read_only", lambda folder: True)
    with pytest.raises(OutputError, match="read-only file system"):
        run_library("quantize", work, target)
    assert os.listdir(out) == ["m.gguf"] and target.read_bytes() == work["old"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a mode-0555 folder anyway")
def test_unwritable_folder(work, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.gguf").write_bytes(work["old"])
    out.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            run_library("convert", work, out / "m.gguf")
    finally:
        out.chmod(0o755)
    assert (out / "m.gguf").read_bytes() == work["old"]


@pytest.fixture
def tmpfs(tmp_path):
    """A real tmpfs mount (root only, where mounting is allowed): mount(size, ro) -> folder."""
    mounted = []

    def mount(size: str, ro: bool = False) -> Path:
        d = tmp_path / f"tmpfs{len(mounted)}"
        d.mkdir()
        opts = f"size={size}" + (",ro" if ro else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(d)
        return d

    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_real_read_only_mount(work, tmpfs):
    ro = tmpfs("1m", ro=True)
    with pytest.raises(OutputError, match="read-only file system"):
        run_library("convert", work, ro / "m.gguf")
    assert os.listdir(ro) == []


def test_real_full_disk(work, tmpfs, monkeypatch):
    """A tmpfs smaller than the output: the up-front space check refuses; with the check
    fooled, the kernel's own ENOSPC mid-write ends in the same clean error."""
    full = tmpfs(f"{len(work['ref-convert']) // 2 // 4096 * 4096}")
    with pytest.raises(OutputError, match="not enough disk space"):
        run_library("convert", work, full / "m.gguf")
    assert os.listdir(full) == []
    monkeypatch.setattr(gguf_writer, "HEADER_MARGIN", -(1 << 40))
    with pytest.raises(OutputError, match="no space left"):
        run_library("convert", work, full / "m.gguf")
    assert os.listdir(full) == []


def test_stale_partials_are_recognised_and_live_ones_are_not(work, tmp_path):
    """What `ggtool prune` (and the next run) may remove: partials no process holds."""
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    stale = out / "m.gguf.0123abcd.incomplete"
    stale.write_bytes(work["ref-convert"][:1000])
    live = out / "m.gguf.89abcdef.incomplete"
    with open(live, "wb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        (out / "m.gguf.notours.incomplete").write_bytes(b"x")
        (out / "other.gguf.0123abcd.incomplete").write_bytes(b"x")
        assert gguf_writer.stale_partials(out / "m.gguf") == [stale]
        with pytest.raises(CorruptFile):
            GGUFFile(stale)
    assert gguf_writer.stale_partials(out / "m.gguf") == sorted([stale, live])


def test_an_interrupted_write_in_process_removes_its_partial(work, tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) in the middle of writing: the partial file is removed."""
    out = tmp_path / "out"
    out.mkdir()
    calls = {"n": 0}
    real = gguf_writer.GGUFOutput.write

    def write(self, name, data):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(self, name, data)

    monkeypatch.setattr(gguf_writer.GGUFOutput, "write", write)
    with pytest.raises(KeyboardInterrupt):
        run_library("convert", work, out / "m.gguf")
    assert os.listdir(out) == []


def test_errors_are_ggtool_errors():
    assert issubclass(OutputError, GgtoolError)


# --------------------------------------------------------------------------- imatrix, bench's cache

@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
def test_imatrix_write_errors_leave_the_old_file(err, work, tmp_path, say):
    from fuzz.seeds import write_imatrix
    from ggtool.formats import imatrix

    out = tmp_path / "out"
    out.mkdir()
    write_imatrix(work["f16"], out / "old.gguf")
    im = imatrix.read(out / "old.gguf")
    target = out / "m.imatrix.gguf"
    (out / "old.gguf").rename(target)
    old = target.read_bytes()
    im.chunk_count += 1  # so the new file differs from the old one
    rng = random.Random(f"imatrix-{err}")
    offsets = sorted({0, len(old) - 1} | {rng.randrange(len(old)) for _ in range(18)})
    for at in offsets:
        with write_faults(out, at_byte=at, err=err):
            with pytest.raises(OutputError) as e:
                imatrix.write_gguf(im, target)
        assert e.value.hint and os.listdir(out) == ["m.imatrix.gguf"] and target.read_bytes() == old
    imatrix.write_gguf(im, target)
    assert imatrix.read(target).chunk_count == im.chunk_count
    say(f"{len(offsets)} {errno.errorcode[err]} faults writing an imatrix: {len(offsets)} OutputErrors, "
        "0 partial files, the old imatrix intact each time, the next write succeeded")


def test_damaged_bench_cache_entries_are_made_again(work, tmp_path):
    """bench's cache (a quantized level + its sidecar, a measured row): a truncated or garbled
    entry counts as missing and is made again, never a traceback."""
    import json

    from ggtool import bench

    root = tmp_path / "bench"
    kw = dict(threads=1, progress=False, log=None, rules="llama.cpp")
    path, _ = bench.quantize_level(work["f16"], "ab" * 32, "Q8_0", "ggtool", root, **kw)
    side = bench._sidecar(path)
    for damage in (b'{"seconds": ', b"[]", b'{"seconds": "x"}', b"\xff"):
        side.write_bytes(damage)
        again, seconds = bench.quantize_level(work["f16"], "ab" * 32, "Q8_0", "ggtool", root, **kw)
        assert again == path and seconds >= 0
        assert json.loads(side.read_text())["seconds"] == seconds


def test_damaged_logprob_and_sensitivity_caches(tmp_path, monkeypatch):
    from ggtool.evaluate import BaseLogprobs
    from ggtool.plan import sensitivity

    d = tmp_path / "lp"
    d.mkdir()
    for meta in (b"{", b"[1]", b'{"format": 1}'):
        (d / "meta.json").write_bytes(meta)
        with pytest.raises(InputError) as e:
            BaseLogprobs(d)
        assert str(d) in e.value.message and "delete" in e.value.hint
    monkeypatch.setattr(sensitivity, "cache_root", lambda: tmp_path)
    for damage in (b"{", b"[]", b'{"format": "ggtool-sensitivity"}'):
        (tmp_path / "k.json").write_bytes(damage)
        assert sensitivity.load_cached("k") is None
