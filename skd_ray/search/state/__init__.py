"""What a search keeps on disk so that it can be resumed: its own record (`saved`:
`skd_search.json`), Ray Tune's and Optuna's files checked before a resume (`tune_files`), a
last good copy of them that a full disk cannot truncate (`backup`), where its Optuna study is
(`study`) and the lock of its one live driver (`live`). Ray-free."""
