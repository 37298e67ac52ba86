"""`manage.py demo`: a demo organization with history (`seed`), and signed webhook traffic
against a running app (`traffic`)."""
