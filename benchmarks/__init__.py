"""`make bench`: the bundle measured against the machine's limit and the usual way (issue 5)."""
