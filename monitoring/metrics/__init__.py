"""Request and cache metrics: recorded in each process, written to the database in small
windows, aggregated across every process for any period."""
