"""Run as a separate process by test_evaluator: an evaluator named by argv[1] that, once the test
writes "go" on stdin, runs `Evaluator.round()` argv[2] times back to back and prints how many of
those rounds it was the active evaluator ("active N")."""

import os
import sys

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsdash.settings")
    django.setup()
    from monitoring.alerts.evaluator import Evaluator

    holder, rounds = sys.argv[1], int(sys.argv[2])
    evaluator = Evaluator(holder=holder)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit(2)
    active = sum(evaluator.round() for _ in range(rounds))
    print(f"active {active}", flush=True)


if __name__ == "__main__":
    main()
