"""What a search keeps on disk so that it can be resumed: its own record (`saved`:
`skd_search.json`), Ray Tune's and Optuna's files checked before a resume (`tune_files`) and a
last good copy of them that a full disk cannot truncate (`backup`). Ray-free."""
