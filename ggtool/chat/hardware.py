"""What llama.cpp can use on this machine, and how a model is placed on it.

- CPU features (from `llama_print_system_info`), the number of threads;
- GPU devices (CUDA, Metal, Vulkan...) with their free memory, through libggml's backend device
  API (`ggml_backend_dev_*`, read with ctypes: llama-cpp-python does not wrap it);
- the context size: the model's trained context, capped to what the KV cache can take in memory;
- the number of layers to put on the GPU: as many as fit in free device memory
  (`--gpu-layers N` overrides), counted as llama.cpp counts them: the output layer goes first,
  then the repeating layers from the last one down.

The arithmetic (`plan`) takes plain numbers, so it is tested with made-up devices; the probes
(`probe`) read the real machine.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..units import human_bytes

MiB = 1024 * 1024
GPU_RESERVE = 512 * MiB         # per device: compute buffers, CUDA context, fragmentation
GPU_RESERVE_FRACTION = 0.05     # ... and 5% of the free memory on top
RAM_RESERVE = 1024 * MiB        # keep this much RAM free for everything else
MIN_CTX = 512
DEVICE_TYPES = {0: "CPU", 1: "GPU", 2: "iGPU", 3: "ACCEL", 4: "META"}


def human(n: float) -> str:
    """Memory in binary units (KV cache, RAM, VRAM)."""
    return human_bytes(n, binary=True)


# ------------------------------------------------------------------ the model's shape

@dataclass
class ModelShape:
    """What placement needs from a GGUF: layer count, KV geometry, bytes per layer."""

    arch: str
    n_layer: int
    n_ctx_train: int
    kv_heads: list[int]             # per layer
    head_dim_k: int
    head_dim_v: int
    layer_bytes: list[int]          # weights of each repeating layer (blk.N.*)
    output_bytes: int               # the output layer (output.weight, or a copy of token_embd if tied)
    other_bytes: int                # token_embd and the rest (stay on the CPU)

    @property
    def weight_bytes(self) -> int:
        return sum(self.layer_bytes) + self.output_bytes + self.other_bytes

    def kv_bytes_per_token(self, bytes_per_value: float = 2.0) -> int:
        """K and V for one token in every layer (f16 cache by default)."""
        return int(sum(h * (self.head_dim_k + self.head_dim_v) for h in self.kv_heads) * bytes_per_value)

    def kv_bytes(self, n_ctx: int, layers: int | None = None) -> int:
        per_layer = [h * (self.head_dim_k + self.head_dim_v) * 2 * n_ctx for h in self.kv_heads]
        return int(sum(per_layer if layers is None else per_layer[len(per_layer) - layers:]))

    @classmethod
    def from_gguf(cls, path: str | Path) -> "ModelShape":
        from ..formats.gguf_reader import GGUFFile

        g = GGUFFile(path)
        try:
            arch = g.get("general.architecture")
            if not arch:
                raise InputError(f"{path} has no general.architecture", hint="the file is not a model GGUF")

            def key(k, default=None):
                return g.get(f"{arch}.{k}", default)

            n_layer = int(key("block_count", 0))
            n_embd = int(key("embedding_length", 0))
            n_head = key("attention.head_count", 0)
            n_head = n_head[0] if isinstance(n_head, list) else int(n_head)
            kv = key("attention.head_count_kv", n_head)
            kv_heads = [int(x) for x in kv] if isinstance(kv, list) else [int(kv)] * n_layer
            hd = n_embd // n_head if n_head else 0
            hk, hv = int(key("attention.key_length", hd)), int(key("attention.value_length", hd))
            n_ctx_train = int(key("context_length", 0))
            layer_bytes = [0] * n_layer
            out = other = tok = 0
            for t in g.tensors:
                m = re.match(r"blk\.(\d+)\.", t.name)
                if m and int(m.group(1)) < n_layer:
                    layer_bytes[int(m.group(1))] += t.nbytes
                elif t.name.startswith("output"):   # output.weight, output_norm.weight
                    out += t.nbytes
                else:
                    other += t.nbytes
                    if t.name == "token_embd.weight":
                        tok = t.nbytes
            if not any(t.name == "output.weight" for t in g.tensors):
                out += tok   # tied embeddings: llama.cpp loads a copy of token_embd as the output layer
            return cls(arch, n_layer, n_ctx_train, kv_heads, hk, hv, layer_bytes, out, other)
        finally:
            g.close()


# ------------------------------------------------------------------ the machine

@dataclass
class Device:
    name: str
    description: str
    kind: str                       # GPU, iGPU, ...
    free: int
    total: int


@dataclass
class Machine:
    cpu_features: list[str]
    threads: int
    ram_available: int | None
    gpu_offload: bool               # llama.cpp was built with a GPU backend
    devices: list[Device] = field(default_factory=list)   # GPUs llama.cpp sees
    gpu_hint: str = ""              # e.g. "an NVIDIA GPU is here but this llama.cpp build is CPU-only"


def cpu_features(system_info: str) -> list[str]:
    """The features llama.cpp reports on ('AVX2 = 1' -> 'AVX2'), in its order."""
    return [m.group(1) for m in re.finditer(r"([A-Z][A-Z0-9_]*) = 1\b", system_info)]


def default_threads() -> int:
    """Physical cores this process may use (llama.cpp's own default), else logical ones."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
    cores = set()
    for c in allowed:
        base = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            cores.add(((base / "physical_package_id").read_text().strip(), (base / "core_id").read_text().strip()))
        except OSError:
            return max(1, len(allowed))
    return max(1, len(cores))


def ram_available() -> int | None:
    """Bytes of RAM a new allocation can get without swapping (Linux MemAvailable; macOS: most of
    the physical memory, which Metal shares); None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.7)
    except (ValueError, OSError, AttributeError):
        return None


def _libggml():
    import llama_cpp

    libdir = Path(llama_cpp.__file__).parent / "lib"
    for pattern in ("libggml.so*", "libggml.dylib", "ggml.dll", "libggml.*"):
        for cand in sorted(libdir.glob(pattern)):
            try:
                return ctypes.CDLL(str(cand))
            except OSError:
                continue
    return None


def gpu_devices() -> list[Device]:
    """GPU-like devices registered in libggml (empty on a CPU-only build)."""
    lib = _libggml()
    if lib is None or not hasattr(lib, "ggml_backend_dev_count"):
        return []
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_name.restype = ctypes.c_char_p
    lib.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_description.restype = ctypes.c_char_p
    lib.ggml_backend_dev_description.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_memory.restype = None
    lib.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                            ctypes.POINTER(ctypes.c_size_t)]
    out = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        kind = DEVICE_TYPES.get(lib.ggml_backend_dev_type(dev), "?")
        if kind not in ("GPU", "iGPU"):
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        out.append(Device((lib.ggml_backend_dev_name(dev) or b"?").decode(errors="replace"),
                          (lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
                          kind, int(free.value), int(total.value)))
    return out


def _unused_gpu_hint(gpu_offload: bool) -> str:
    """A GPU this build of llama.cpp cannot use: say how to get a build that can."""
    if gpu_offload:
        return ""
    if shutil.which("nvidia-smi") or Path("/dev/nvidia0").exists():
        return "an NVIDIA GPU is here but llama.cpp was built for the CPU only: GGTOOL_LLAMA_BACKEND=cuda make install"
    if sys.platform == "darwin" and os.uname().machine == "arm64":
        return "this Mac has a Metal GPU but llama.cpp was built without Metal: GGTOOL_LLAMA_BACKEND=metal make install"
    return ""


def probe() -> Machine:
    from ..llamacpp import llama_cpp, system_info

    mod = llama_cpp()
    info = system_info()
    offload = bool(mod.llama_supports_gpu_offload())
    devices = []
    if offload:
        try:
            devices = gpu_devices()
        except (OSError, AttributeError):   # an older libggml without the device API
            devices = []
    return Machine(cpu_features(info), default_threads(), ram_available(), offload, devices,
                   _unused_gpu_hint(offload))


# ------------------------------------------------------------------ placement

@dataclass
class Plan:
    n_ctx: int
    n_gpu_layers: int               # llama.cpp's count: repeating layers + the output layer
    threads: int
    kv_bytes: int
    kv_gpu_bytes: int
    notes: list[str] = field(default_factory=list)

    def describe(self, shape: ModelShape, machine: Machine) -> list[str]:
        feats = ", ".join(f for f in machine.cpu_features if f in _SHOWN_FEATURES) or "baseline"
        total = shape.n_layer + 1
        on_gpu = min(self.n_gpu_layers, total)
        lines = [f"CPU: {self.threads} thread{'s' if self.threads != 1 else ''} ({feats})"]
        if machine.devices:
            devs = "; ".join(f"{d.name} {d.description} ({human(d.free)} free of {human(d.total)})"
                             for d in machine.devices)
            lines.append(f"GPU: {devs}")
            lines.append(f"layers on GPU: {on_gpu}/{total}" + ("" if on_gpu == total else
                         f" (the other {total - on_gpu} on the CPU)"))
        elif machine.gpu_offload:
            lines.append("GPU: llama.cpp has a GPU backend but sees no device; everything runs on the CPU")
        else:
            lines.append("GPU: none (CPU-only llama.cpp build); everything runs on the CPU"
                         + (f"\n  note: {machine.gpu_hint}" if machine.gpu_hint else ""))
        where = "" if not machine.devices else f", {human(self.kv_gpu_bytes)} of it on GPU"
        lines.append(f"context: {self.n_ctx} tokens (trained: {shape.n_ctx_train}); "
                     f"KV cache {human(self.kv_bytes)} (f16{where})")
        return lines + [f"note: {n}" for n in self.notes]


_SHOWN_FEATURES = ("AVX", "AVX2", "AVX512", "AVX512_VNNI", "AVX512_BF16", "AVX_VNNI", "FMA", "F16C", "NEON",
                   "ARM_FMA", "DOTPROD", "SVE", "SME", "AMX_INT8", "ACCELERATE", "BLAS", "OPENMP", "LLAMAFILE")


def choose_ctx(shape: ModelShape, requested: int | None, machine: Machine) -> tuple[int, list[str]]:
    """`requested`, or the trained context capped so that weights + KV cache fit in memory."""
    trained = shape.n_ctx_train or 4096
    notes = []
    if requested:
        if requested < 1:
            raise InputError(f"--ctx {requested}: the context must be at least 1 token")
        if shape.n_ctx_train and requested > shape.n_ctx_train:
            notes.append(f"--ctx {requested} is beyond the {shape.n_ctx_train} tokens the model was trained "
                         "on; answers past that point may degrade")
        return requested, notes
    memory = (machine.ram_available or 0) - RAM_RESERVE
    memory += sum(max(0, d.free - GPU_RESERVE) for d in machine.devices if d.kind == "GPU")
    if machine.ram_available is None:
        return trained, notes
    budget = memory - shape.weight_bytes
    per_tok = max(1, shape.kv_bytes_per_token())
    fits = budget // per_tok if budget > 0 else 0
    if fits >= trained:
        return trained, notes
    n_ctx = max(MIN_CTX, int(fits) // 256 * 256)
    notes.append(f"context capped to {n_ctx} of the {trained} tokens the model was trained on: a full KV "
                 f"cache ({human(per_tok * trained)}) would not fit next to the weights in the "
                 f"{human(max(memory, 0))} of memory available; --ctx N to choose")
    return n_ctx, notes


def choose_gpu_layers(shape: ModelShape, n_ctx: int, machine: Machine,
                      requested: int | None) -> tuple[int, list[str]]:
    """How many layers (llama.cpp's count, output layer first) fit in the GPUs' free memory."""
    total = shape.n_layer + 1
    if requested is not None:
        n = total if requested < 0 or requested > total else requested
        if n and not machine.gpu_offload:
            return 0, [f"--gpu-layers {requested} asked for the GPU, but llama.cpp was built without a GPU "
                       "backend; running on the CPU" + (f" ({machine.gpu_hint})" if machine.gpu_hint else "")]
        return n, []
    if not machine.gpu_offload or not machine.devices:
        return 0, []
    budget = sum(max(0, d.free - GPU_RESERVE - int(d.free * GPU_RESERVE_FRACTION)) for d in machine.devices)
    kv_layer = [h * (shape.head_dim_k + shape.head_dim_v) * 2 * n_ctx for h in shape.kv_heads]
    # costs in llama.cpp's order: the output layer, then layers n_layer-1, n_layer-2, ...
    costs = [shape.output_bytes] + [shape.layer_bytes[i] + kv_layer[i] for i in reversed(range(shape.n_layer))]
    used, n = 0, 0
    for c in costs:
        if used + c > budget:
            break
        used += c
        n += 1
    notes = []
    if n < total:
        notes.append(f"{n} of {total} layers fit in the GPU's free memory ({human(budget)} usable); "
                     "the rest run on the CPU (--gpu-layers N, or a smaller --ctx, to change)")
    return n, notes


def plan(shape: ModelShape, machine: Machine, ctx: int | None = None, gpu_layers: int | None = None,
         threads: int | None = None) -> Plan:
    n_ctx, notes = choose_ctx(shape, ctx, machine)
    n_gpu, more = choose_gpu_layers(shape, n_ctx, machine, gpu_layers)
    kv_gpu = shape.kv_bytes(n_ctx, layers=min(max(n_gpu - 1, 0), shape.n_layer)) if machine.devices else 0
    return Plan(n_ctx, n_gpu, threads or machine.threads, shape.kv_bytes(n_ctx), kv_gpu, notes + more)


def offloaded_from_log(lines) -> tuple[int, int] | None:
    """llama.cpp's own word on what it offloaded ('offloaded 31/31 layers to GPU')."""
    for line in reversed(list(lines)):
        m = re.search(r"offloaded (\d+)/(\d+) layers to GPU", line)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None
