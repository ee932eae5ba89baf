"""Submissions, validation, aggregation, the static leaderboard site and reproduction of a row.

``submission`` reads one result file safely; ``validate`` checks it against this repo's tasks;
``submit`` files it under ``submissions/``; ``aggregate`` + ``stats`` build the tables; ``site`` +
``plots`` render ``leaderboard/``; ``reproduce`` re-runs a row.
"""
