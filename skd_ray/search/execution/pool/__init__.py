"""Persistent DDP worker pools: multi-worker trials without a new Ray Train run each.

`driver` starts the pools and their mailbox, `worker` is the loop every pool worker runs,
`mailbox` is the Ray-free meeting point of trials and pools, `link` is a trial's side of a job.
"""
