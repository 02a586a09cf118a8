"""Ranking candidate checkpoints: case-level bootstrap statistics (`bootstrap.py`), the leaderboard and
its composite deployment score (`leaderboard.py`). The evaluation units they read are made by
`parity.runs.rank`."""
