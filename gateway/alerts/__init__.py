"""Alerts to grid members (R5): rules → conditions → alerts → routing → escalation → delivery."""
