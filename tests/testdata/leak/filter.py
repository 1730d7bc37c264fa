"""Keep the four test containers' memory figures, restarts and events (README.md):
``python3 filter.py rec.jsonl leak.jsonl.gz``."""

import gzip
import json
import sys

KEEP = {"mem.working_set_bytes", "mem.limit_bytes", "mem.usage_bytes", "mem.usage_ratio", "mem.oom_kills",
        "proc.restarts"}


def main(src: str, dst: str) -> None:
    n = 0
    with open(src) as f, gzip.open(dst, "wt", compresslevel=9) as out:
        for line in f:
            obj = json.loads(line)
            if not obj["container"].startswith("cgw-") or obj.get("metric", "") not in KEEP | {""}:
                continue
            out.write(line)
            n += 1
    print(n, "lines")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
