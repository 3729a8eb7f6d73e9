"""The local AWS emulator: moto in server mode, with DynamoDB's writes made atomic.

moto serves each request on its own thread and checks a write's condition, then applies it, with
nothing held in between: two conditional writes racing for one item can both pass their checks
(a worker's claim and a caller's cancel both win). DynamoDB never lets that happen, and sluice's
exactly-one-owner guarantees rest on it, so this launcher serves one DynamoDB request at a time.
Other services are untouched (an SQS long poll must not hold up the rest).

Usage: python scripts/emulator.py [moto_server arguments], e.g. -H 127.0.0.1 -p 4566.
SLUICE_EMULATOR_SWITCH_INTERVAL (seconds) makes the server's threads interleave more often, for
the test that proves the writes atomic.
"""

import os
import sys
import threading


def switch_interval():
    raw = os.environ.get("SLUICE_EMULATOR_SWITCH_INTERVAL")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= 1:
        sys.exit(f"SLUICE_EMULATOR_SWITCH_INTERVAL must be a number of seconds in (0, 1], not {raw!r}")
    return value


def serialize_dynamodb():
    from moto.dynamodb.responses import DynamoHandler

    lock = threading.Lock()
    call_action = DynamoHandler.call_action

    def one_at_a_time(self):
        with lock:
            return call_action(self)

    DynamoHandler.call_action = one_at_a_time


def main():
    interval = switch_interval()
    if interval is not None:
        sys.setswitchinterval(interval)
    serialize_dynamodb()
    from moto.server import main as serve

    serve(sys.argv[1:])


if __name__ == "__main__":
    main()
