"""Write a small synthetic trace in the public Mooncake format (no download).

Format (kvcache-ai/Mooncake, FAST'25 traces; replayed by AIPerf and GuideLLM): one JSON object per
line, {"timestamp": ms, "input_length": tokens, "output_length": tokens, "hash_ids": [ints]}, each
hash id naming one 512-token block of the prompt; equal ids mean identical blocks, so rows that start
with the same ids share that prefix. This script makes agent-like traffic: a few conversations,
each turn's prompt = the previous turn's blocks + new blocks (a growing shared prefix), plus a
shared system block every conversation starts with. Seeded: the same arguments give the same file.

    python scripts/make_mooncake_trace.py --out configs/traces/mooncake-synthetic.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

BLOCK = 512  # tokens per hash id in Mooncake's traces


def make_rows(conversations: int, turns: int, new_blocks: int, output_len: int, gap_ms: int,
              seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    next_id = 1  # id 0 = the system block every conversation shares
    rows = []
    for c in range(conversations):
        ids = [0]
        t_ms = c * gap_ms // 2
        for _ in range(turns):
            ids = ids + list(range(next_id, next_id + new_blocks))
            next_id += new_blocks
            tail = rng.randint(1, BLOCK - 1)  # a partial last block, as real prompts have
            rows.append({"timestamp": t_ms, "input_length": (len(ids) - 1) * BLOCK + tail,
                         "output_length": output_len, "hash_ids": list(ids)})
            t_ms += gap_ms + rng.randint(0, gap_ms)
    rows.sort(key=lambda r: r["timestamp"])  # type: ignore[arg-type, return-value]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("configs/traces/mooncake-synthetic.jsonl"))
    ap.add_argument("--conversations", type=int, default=4)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--new-blocks", type=int, default=1, help="512-token blocks each turn adds")
    ap.add_argument("--output-len", type=int, default=16)
    ap.add_argument("--gap-ms", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rows = make_rows(a.conversations, a.turns, a.new_blocks, a.output_len, a.gap_ms, a.seed)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} rows to {a.out}")  # noqa: T201


if __name__ == "__main__":
    main()
