"""The Ray cluster a search runs on: joining or starting it and sizing the search to it
(`connect`), what an autoscaling cluster may grow to (`autoscaler`), never waiting for
resources silently (`waiting`) and freeing placement groups that outlived their run
(`orphans`). Importing this face loads nothing."""
