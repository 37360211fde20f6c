"""`escalator demo`: the learning loop end to end against a running proxy (collect with
exploration, train, install the helper, compare it with the baselines on fresh tasks)."""
