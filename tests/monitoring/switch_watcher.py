"""Run as a separate process by test_switch: watches the switch the way a served app does
(the background refresher) and prints when it sees caching change."""

import os
import sys
import time

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsdash.settings")
    django.setup()
    from monitoring.cache import switch

    refresher = switch.SwitchRefresher(switch.view)
    initial = switch.view.refresh().enabled
    refresher.start()
    print(f"ready {initial}", flush=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if switch.view.current().enabled != initial:
            print(f"seen {time.time():.6f}", flush=True)
            return
        time.sleep(0.005)
    print("timeout", flush=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
