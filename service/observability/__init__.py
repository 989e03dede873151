"""Metrics, logs, tracing and drift: what the server tells its operators. Leaves any layer may use."""
