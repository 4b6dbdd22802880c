"""How one trial trains: the Tune function trainable (`trial`), what an attempt trains and how
it ends (`job`), the three ways it trains (`executors`: in the trial process, in a DDP pool, or
in its own Ray Train run), where `fit` reports to on Ray (`sessions`) and the persistent DDP
worker pools (`pool/`). Importing this face loads nothing."""
