"""What the `edit` plan does on common cards: for 6, 8, 12, 16 and 24 GB cards (their free memory: the
size less ``attention.memory.CUDA_CONTEXT``), at a size, in both cache modes, the way a step of the asked
window runs and what it needs (``attention.memory.gpu_need``), and the window the plan takes when the
asked one does not fit (``headless.edit_job.prepare_job``: the largest that fits,
``attention.memory.largest_window``). Computed, not measured: the peaks a GPU really reaches come from
``bench_long_clips.py --full-size`` on that GPU (`peak_device_mib`, next to this estimate). Prints a
table, then ``name=value`` lines.

    python tests/benchmarks/bench_gpu_plan.py [--size 512] [--window 16] [--cards 6 8 12 16 24]
"""

from __future__ import annotations

import argparse
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
import_command = runpy.run_path(str(ROOT / "__main__.py"))["import_command"]
memory = import_command("attention.memory")
preservation = import_command("editing.preservation")

MODES = {"recompute": 3, "store": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="the frames' square size in pixels")
    parser.add_argument("--window", type=int, default=16, help="the asked window (--window)")
    parser.add_argument("--cards", type=int, nargs="+", default=[6, 8, 12, 16, 24], help="card sizes in GB")
    args = parser.parse_args()
    latent = (args.size // 8, args.size // 8)
    gib = memory.GIB
    print(
        f"{args.size} px, window {args.window}, fp16 / bf16; free = card - {memory.CUDA_CONTEXT / 2**20:.0f} MiB"
    )
    print("card  | free     | mode      | window | need     | way")
    values = []
    for card in args.cards:
        free = memory.card_free(card)
        for mode, chunks in MODES.items():
            held = preservation.store_bytes(1, 0, latent) if chunks == 3 else 0
            window = args.window
            if memory.gpu_need(window, chunks, latent, 2, held).total > free:
                window = memory.largest_window(free, chunks, latent, 2, held, longest=args.window)
            if window < 2:
                print(f"{card:2d} GB | {free / gib:4.1f} GiB | {mode:9s} | none fits")
                values.append(f"{mode}_{card}gb_window=0")
                continue
            need = memory.gpu_need(window, chunks, latent, 2, held, free=free)
            print(
                f"{card:2d} GB | {free / gib:4.1f} GiB | {mode:9s} | {window:6d} | {need.total / gib:4.1f} GiB | "
                f"{need.path}"
            )
            largest = memory.largest_window(free, chunks, latent, 2, held)
            values += [
                f"{mode}_{card}gb_window={window}",
                f"{mode}_{card}gb_need_gib={need.total / gib:.2f}",
                f"{mode}_{card}gb_largest_window={largest}",
            ]
    print("\n".join(values))


if __name__ == "__main__":
    main()
