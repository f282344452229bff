"""What iclkit's start-up is made of (issue 18 §3): each step of loading the default model, in a fresh process, in
the order the ICL benchmark pays for them, as wall and CPU seconds.

Steps: ``import torch``; ``import transformers``' auto classes; iclkit's LM modules; the tokenizer; the model's
weights (``from_pretrained`` on iclkit's converted folder); the first and a second 2-token forward pass (the first
also pages the memory-mapped weights in; iclkit's load runs one to learn which KV cache the model builds).
CPU seconds move less than wall seconds with the machine's load.

Then the floor any transformers-based scorer of this model pays, in a second fresh process: ``import torch``, the
model's modeling module (``transformers.models.llama.modeling_llama``, with everything it imports), and
``from_pretrained`` once those imports are done (the weights alone); and how long that process takes to exit after
its last line, which every run of such a scorer also pays, and the same with ``gc.freeze()`` before that line (what
the ``iclkit`` command does before it exits: the interpreter's last collections then skip the objects of those
imports). iclkit's start-up less that floor is its own.

With ``--with-run``, last: how long the default ``iclkit run`` (warm caches) takes to exit after its ``main``
returns, without and with that ``gc.freeze()``, two rounds alternating.

    python benchmarks/startup.py            # the default model, converted once into iclkit's cache
    python benchmarks/startup.py --with-run
"""

from __future__ import annotations

import sys
import time

_last = (time.perf_counter(), time.process_time())
_rows: list[tuple[str, float, float]] = []


def lap(step: str) -> None:
    global _last
    now = (time.perf_counter(), time.process_time())
    _rows.append((step, now[0] - _last[0], now[1] - _last[1]))
    _last = now


def main() -> None:
    import torch

    lap("import torch")
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast  # noqa: F401

    lap("import transformers (AutoModelForCausalLM, PreTrainedTokenizerFast)")
    from _iclkit_core import ensure_importable

    ensure_importable()
    from iclkit.lm.weights import load_tokenizer
    from iclkit.lm.spec import ModelSpec
    from iclkit.lm.weights import resolve

    folder = str(resolve(ModelSpec())[0])
    lap("import iclkit's LM modules, find the converted model")
    load_tokenizer(folder)
    lap("tokenizer (iclkit's load_tokenizer)")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    lap("model weights (from_pretrained)")
    ids = torch.zeros(1, 2, dtype=torch.long)
    with torch.inference_mode():
        model(input_ids=ids)
        lap("first 2-token forward")
        model(input_ids=ids)
        lap("second 2-token forward")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {__import__('os').getloadavg()[0]:.2f}")
    print("| step | wall s | CPU s |\n|---|---:|---:|")
    for step, wall, cpu in _rows:
        print(f"| {step} | {wall:.2f} | {cpu:.2f} |")
    print(f"| total | {sum(r[1] for r in _rows):.2f} | {sum(r[2] for r in _rows):.2f} |")
    print(floor(folder))


FLOOR = """
import gc
import time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import transformers.models.llama.modeling_llama
from transformers import AutoModelForCausalLM
t2 = time.perf_counter()
AutoModelForCausalLM.from_pretrained({folder!r}, dtype=torch.float32)
t3 = time.perf_counter()
if {freeze}:
    gc.freeze()
print(f"{{t1 - t0:.2f}} {{t2 - t1:.2f}} {{t3 - t2:.2f}} {{time.process_time():.2f}} {{time.time()!r}}")
"""


def floor(folder: str) -> str:
    """The floor of a transformers-based scorer (see the module docstring), measured in a fresh process; then the
    same process again with ``gc.freeze()`` before its last line, as iclkit's console command exits."""
    import subprocess

    exits = []
    for freeze in (False, True):
        out = subprocess.run([sys.executable, "-c", FLOOR.format(folder=folder, freeze=freeze)], capture_output=True,
                             text=True, check=True).stdout.split()
        exits.append(time.time() - float(out[-1]))
        if not freeze:
            torch_s, modules_s, weights_s, cpu_s = map(float, out[-5:-1])
    return (f"floor (fresh process): import torch {torch_s:.2f} s, transformers' Llama modules {modules_s:.2f} s, "
            f"from_pretrained after those imports {weights_s:.2f} s; total {torch_s + modules_s + weights_s:.2f} s "
            f"wall, {cpu_s:.2f} s CPU; then the interpreter's exit after the script's last line (tearing down the "
            f"modules imported) {exits[0]:.2f} s, or {exits[1]:.2f} s with gc.freeze() before that line (as the "
            f"iclkit command does)")


RUN_EXIT = """
import gc, sys, time
from iclkit.cli import main
code = main(["run", "--no-progress"])
sys.stdout.flush()
if {freeze}:
    gc.freeze()
print(time.time(), file=sys.stderr)
sys.exit(code)
"""


def run_exit(rounds: int) -> str:
    """How long the default ``iclkit run`` takes to exit after ``main`` returns, without and with the command's
    ``gc.freeze()``, alternating for ``rounds`` rounds (fresh processes, warm caches, no data folder, hub offline)."""
    import os
    import subprocess
    import tempfile

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ICLKIT_DATA_DIR": ""}
    exits: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(rounds):
            for freeze in (False, True):
                proc = subprocess.run([sys.executable, "-c", RUN_EXIT.format(freeze=freeze)], cwd=cwd, env=env,
                                      capture_output=True, text=True, check=True)
                exits[freeze].append(time.time() - float(proc.stderr.strip().splitlines()[-1]))
    return (f"iclkit run (default, warm): exit after main returns {', '.join(f'{x:.2f}' for x in exits[False])} s; "
            f"with gc.freeze() {', '.join(f'{x:.2f}' for x in exits[True])} s")


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    main()
    if "--with-run" in sys.argv[1:]:
        print(run_exit(rounds=2))
