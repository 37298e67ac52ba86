"""The ops dashboard: overview, alerts, switch history, the switch and flush actions, and the
websocket that keeps every open page live."""
