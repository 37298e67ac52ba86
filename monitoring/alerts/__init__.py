"""Alerts: rules over the deployment's figures, a pending -> firing -> resolved lifecycle kept in
the database, and notifications on Slack and e-mail."""
