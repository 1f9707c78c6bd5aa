"""Library use: convert a Hugging Face checkpoint folder to GGUF and run it with llama.cpp.

    python examples/convert_and_generate.py path/to/checkpoint [Q8_0]
"""

import sys

from ggtool.convert import convert
from ggtool.llamacpp.runtime import Model

src = sys.argv[1]
out_type = sys.argv[2] if len(sys.argv) > 2 else "Q8_0"
res = convert(src, f"model.{out_type}.gguf", out_type, log=print)
print(f"{res.path}: {res.n_tensors} tensors, {res.bits_per_weight:.2f} bits/weight, {res.seconds:.1f} s")
print(Model(res.path).generate("The capital of France is", max_tokens=24))
