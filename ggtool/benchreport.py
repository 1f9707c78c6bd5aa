"""What `ggtool bench` prints: the markdown table, CSV, the plot, and the sweet spot.

Sweet spot: the smallest file whose mean KLD against the base is under `max_kld` and that fits
the memory free now with a `fit_ctx`-token context. Memory needed = the file (weights are
mmapped whole) + the F16 KV cache of fit_ctx tokens + llama.cpp's output buffer of one 512-token
micro-batch (n_vocab x 512 floats). Free memory: MemAvailable in /proc/meminfo (Linux: free +
reclaimable page cache), else sysconf's free pages; with GPU offload, the free memory of the
GPUs llama.cpp sees (ggml backend devices).
"""

from __future__ import annotations

import csv
import io
import os

from .errors import DependencyError

KLD_FMT = "{:.5f}"


def human_mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _pm(v, e, fmt="{:.2f}") -> str:
    if v is None:
        return "-"
    return fmt.format(v) + (" ± " + fmt.format(e) if e is not None else "")


def markdown(result) -> str:
    """llama-bench-style markdown table: the base first, then one row per level and quantizer."""
    pp, tg = "pp512 t/s", "tg128 t/s"
    head = ["quant", "by", "size", "bpw", "quantize s", "PPL", "KLD mean", "KLD median", "KLD p99",
            "same top %", pp, tg]
    b = result.base
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|",
             "| " + " | ".join([f"{b['type']} (base)", "-", human_mb(b["bytes"]), f"{b['bpw']:.2f}", "-",
                                _pm(b["ppl"], b["ppl_err"], "{:.3f}"), "0", "0", "0", "100",
                                _pm(b["pp_tps"], b["pp_tps_std"]), _pm(b["tg_tps"], b["tg_tps_std"])]) + " |"]
    for r in result.rows:
        lines.append("| " + " | ".join([
            r.quant, r.quantizer, human_mb(r.bytes), f"{r.bpw:.2f}",
            "-" if r.quantize_s is None else f"{r.quantize_s:.2f}",
            _pm(r.ppl, r.ppl_err, "{:.3f}"), _pm(r.kld_mean, r.kld_err, KLD_FMT), KLD_FMT.format(r.kld_median),
            KLD_FMT.format(r.kld_p99), f"{r.same_top_pct:.2f}",
            _pm(r.pp_tps, r.pp_tps_std), _pm(r.tg_tps, r.tg_tps_std)]) + " |")
    return "\n".join(lines)


def sweet_spot_line(result) -> str:
    s = result.sweet_spot or {}
    if s.get("quant"):
        return (f"Sweet spot: {s['quant']} ({s['quantizer']}), {human_mb(s['bytes'])}: {s['reason']}")
    return f"Sweet spot: none. {s.get('reason', '')}".strip()


def csv_text(result) -> str:
    from .bench import ROW_FIELDS

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ROW_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in result.rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.to_dict().items()})
    return buf.getvalue()


# ---------------------------------------------------------------------------- memory and the sweet spot

def free_ram() -> tuple[int | None, str]:
    """(bytes free for a new process, where the number comes from)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable (/proc/meminfo)"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free pages (sysconf)"
    except (ValueError, OSError, AttributeError):
        return None, "unknown"


def free_vram() -> tuple[int | None, str]:
    """Free memory summed over the GPUs llama.cpp's ggml backends see, or (None, why)."""
    import ctypes

    try:
        from .llamacpp import llama_cpp

        from pathlib import Path
        libdir = Path(llama_cpp().__file__).parent / "lib"
        libs = sorted(libdir.glob("libggml.*")) + sorted(libdir.glob("libggml-base.*"))
        for path in libs:
            lib = ctypes.CDLL(str(path))
            if not hasattr(lib, "ggml_backend_dev_count"):
                continue
            lib.ggml_backend_dev_count.restype = ctypes.c_size_t
            lib.ggml_backend_dev_get.restype = ctypes.c_void_p
            lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
            lib.ggml_backend_dev_type.restype = ctypes.c_int
            lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
            lib.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                                    ctypes.POINTER(ctypes.c_size_t)]
            total_free, n_gpu = 0, 0
            for i in range(lib.ggml_backend_dev_count()):
                dev = lib.ggml_backend_dev_get(i)
                if lib.ggml_backend_dev_type(dev) == 1:  # GGML_BACKEND_DEVICE_TYPE_GPU
                    free, total = ctypes.c_size_t(), ctypes.c_size_t()
                    lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
                    total_free += free.value
                    n_gpu += 1
            if n_gpu:
                return total_free, f"free memory of {n_gpu} GPU(s) (ggml backend devices)"
            return None, "no GPU among llama.cpp's devices"
    except Exception as e:  # noqa: BLE001 - any failure means "not known", said as such
        return None, f"GPU memory unknown ({e.__class__.__name__})"
    return None, "GPU memory unknown"


def memory_needed(file_bytes: int, facts: dict, fit_ctx: int) -> int:
    kv = facts["n_layer"] * fit_ctx * facts["n_head_kv"] * (facts["head_k"] + facts["head_v"]) * 2  # F16 K and V
    out_buf = facts["n_vocab"] * 512 * 4
    return int(file_bytes + kv + out_buf)


def sweet_spot(result, max_kld: float, fit_ctx: int, n_gpu_layers: int = 0) -> dict:
    facts = result.extra["facts"]
    if n_gpu_layers:
        free, source = free_vram()
    else:
        free, source = free_ram()
    common = {"max_kld": max_kld, "fit_ctx": fit_ctx, "free_bytes": free, "memory_source": source}
    good = [r for r in result.rows if r.kld_mean < max_kld]
    # smallest first; at equal size ggtool's file before llama.cpp's, then the lower KLD
    for r in sorted(good, key=lambda r: (r.bytes, r.quantizer != "ggtool", r.kld_mean)):
        need = memory_needed(r.bytes, facts, fit_ctx)
        if free is None or need <= free:
            fit = (f"needs ~{human_mb(need)} with a {fit_ctx}-token context, {human_mb(free)} free"
                   if free is not None else f"memory not checked ({source})")
            return {**common, "quant": r.quant, "quantizer": r.quantizer, "file": r.file, "bytes": r.bytes,
                    "kld_mean": r.kld_mean, "needed_bytes": need,
                    "reason": f"the smallest level with mean KLD {r.kld_mean:.4f} < {max_kld}; {fit}"}
    if not good:
        why = f"no level has a mean KLD under {max_kld} (raise --max-kld or add larger levels)"
    else:
        why = f"every level under KLD {max_kld} needs more than the {human_mb(free)} free ({source})"
    return {**common, "quant": None, "quantizer": None, "file": None, "bytes": None, "kld_mean": None,
            "needed_bytes": None, "reason": why}


# ---------------------------------------------------------------------------- the plot

def pareto(points: list[tuple[float, float]], lower_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both size (smaller) and y."""
    front = []
    for i, (s, y) in enumerate(points):
        beaten = False
        for j, (s2, y2) in enumerate(points):
            if j == i:
                continue
            better_y = y2 <= y if lower_is_better else y2 >= y
            strictly = s2 < s or (y2 < y if lower_is_better else y2 > y)
            if s2 <= s and better_y and strictly:
                beaten = True
                break
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise DependencyError("--plot needs matplotlib, which is not installed",
                              hint="pip install 'ggtool[plot]'  (or: pip install matplotlib)") from None
    return matplotlib


def plot(result, path) -> None:
    """PNG: size vs mean KLD (log) and size vs generation t/s, Pareto fronts marked, points labelled."""
    matplotlib = require_matplotlib()
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # ggtool: filled circles, llama.cpp: crosses (visible on top of each other at equal size)
    markers = {"ggtool": ("o", "tab:blue"), "llama.cpp": ("x", "tab:red"), "base": ("D", "tab:gray")}
    offsets = {"ggtool": (6, 5), "llama.cpp": (6, -12), "base": (6, 5)}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    rows = list(result.rows)
    for ax, key, ylabel, low in ((ax1, "kld_mean", "mean KL divergence vs base (nats, log)", True),
                                 (ax2, "tg_tps", "generation speed tg128 (tokens/s)", False)):
        pts = [(r.bytes / 1e6, getattr(r, key)) for r in rows]
        labels = [r.quant for r in rows]
        kinds = [r.quantizer for r in rows]
        if key == "tg_tps" and result.base.get("tg_tps"):
            pts.append((result.base["bytes"] / 1e6, result.base["tg_tps"]))
            labels.append(result.base["type"] + " base")
            kinds.append("base")
        keep = [i for i, p in enumerate(pts) if p[1] is not None and (not low or p[1] > 0)]
        for kind, (mk, color) in markers.items():
            idx = [i for i in keep if kinds[i] == kind]
            if idx:
                ax.scatter([pts[i][0] for i in idx], [pts[i][1] for i in idx], marker=mk, color=color,
                           s=70 if mk == "x" else 40, label=kind, zorder=3)
        for i in keep:
            ax.annotate(labels[i], pts[i], textcoords="offset points", xytext=offsets[kinds[i]], fontsize=8,
                        color=markers[kinds[i]][1])
        if keep:
            front = [keep[i] for i in pareto([pts[i] for i in keep], low)]
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--", color="black", lw=1,
                    zorder=2, label="Pareto front")
            ax.scatter([pts[i][0] for i in front], [pts[i][1] for i in front], s=160, facecolors="none",
                       edgecolors="black", zorder=4)
        else:
            ax.text(0.5, 0.5, "not measured (--reps 0)", transform=ax.transAxes, ha="center")
        if low and keep:
            ax.set_yscale("log")
        ax.set_xlabel("file size (MB)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    name = os.path.basename(result.base.get("source", "")) or "model"
    fig.suptitle(f"ggtool bench: {name}, {result.tokens_scored} tokens of {result.text['name']}")
    fig.tight_layout()
    path = str(path)
    tmp = f"{path}.{os.getpid()}.incomplete.png"
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
