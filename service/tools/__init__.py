"""Operator commands the server never imports: push, rollout, fleet status, the demo model."""
