"""Runbooks, playbooks, schedules and the jobs that run them."""
