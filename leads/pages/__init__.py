"""The lead pages of the dashboard: the list and each lead's conversation timeline."""
