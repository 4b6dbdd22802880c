"""What a person sees while a search runs: one line per trial event and a progress line
(`progress`), and where Ray's own log records go instead of the console (`ray_logs`)."""
