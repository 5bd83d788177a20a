"""``python -m services.policy.dead_letters list|replay``: the outbox rows that MetricsService
or ScoringService refused as invalid, kept with the receiver's reason.

    python -m services.policy.dead_letters list --database-url sqlite:///rectune-policy.db
    python -m services.policy.dead_letters replay [--id 3 --id 7] --database-url ...

``replay`` moves them (all, or those named) back to the outbox; the running service sends
them with its next round. Replay after fixing what refused them (for example a receiver's
setting); a row refused again comes back here.
"""

from __future__ import annotations

import argparse
import json
import sys

from services.common.storage import make_engine
from services.policy.core.store import PolicyStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.policy.dead_letters", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("list", "replay"))
    parser.add_argument("--database-url", required=True, help="the policy's database (RECTUNE_DATABASE_URL)")
    parser.add_argument("--id", type=int, action="append", default=[], help="replay: only this dead letter (repeat)")
    parser.add_argument("--limit", type=int, default=100, help="list: at most this many, oldest first")
    args = parser.parse_args(argv)
    store = PolicyStore(make_engine(args.database_url))
    if args.command == "list":
        for stored in store.dead_letters(args.limit):
            letter = stored.letter
            print(
                json.dumps({"id": stored.id, "kind": letter.kind, "reason": letter.reason, "payload": letter.payload})
            )
        print(f"{store.dead_letter_count()} dead letters", file=sys.stderr)
        return 0
    print(f"{store.replay_dead_letters(args.id)} dead letters moved back to the outbox", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
