"""What the gateway's room histories cost in memory, against what they count toward the budget.

    .venv/bin/python bench/history_memory.py [--rooms 100] [--per-room 200]

Fills a `RoomHub` (no sockets, no broker) with `--per-room` synthetic replies in each of
`--rooms` rooms, as the gateway does when it reads the replies topic, and prints the bytes
the hub counts toward `history_max_mib` next to the growth of this process's resident
memory. The two should be of the same order: the budget is only a bound if it counts what
the histories hold.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.overlay_load import rss_kib  # noqa: E402
from producers.samples import sample_reply  # noqa: E402
from stream.overlay import Cursor, RoomHub  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--per-room", type=int, default=200, help="replies per room (the gateway keeps 200)")
    args = parser.parse_args()
    hub = RoomHub(client_queue=32, recent_item_ids=1024, history_per_room=args.per_room,
                  max_rooms=max(args.rooms, 1), history_max_bytes=2**40)
    replies = [sample_reply(f"room-{r}", n).model_dump(mode="json") for n in range(args.per_room)
               for r in range(args.rooms)]
    before_kib = rss_kib(os.getpid())
    for offset, reply in enumerate(replies):
        hub.advance(Cursor(0, offset))
        hub.publish(Cursor(0, offset), reply)
    grown_mib = (rss_kib(os.getpid()) - before_kib) / 1024
    counted_mib = hub.history_bytes() / 2**20
    print(f"{len(replies)} replies held: counted {counted_mib:.1f} MiB, resident memory +{grown_mib:.1f} MiB "
          f"(x{grown_mib / counted_mib:.1f})")


if __name__ == "__main__":
    main()
