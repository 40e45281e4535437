"""Egress: one policy for every outbound call a workflow can cause, and what it may name from the environment."""
