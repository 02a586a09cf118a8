"""Decisions: what is concluded from runs' results. Ranking candidate checkpoints (`rank`: the
cached evaluation units of every checkpoint x case x runner x pipeline x perturbation x severity,
and the leaderboard written from them), the case-level bootstrap behind every interval and paired
verdict (`bootstrap`), the leaderboard with its composite deployment score, Pareto front and rank
stability (`leaderboard`, weights in `score.toml`), greedy soups chosen by a deployed criterion
(`soup`); the CI gate: a replay's metrics stored as a baseline (`baseline`), compared with a
candidate's under the rules of `gate.toml`, failing closed (`gate`), written as JUnit XML and
Markdown (`gate_outputs`); the self-contained HTML report of any run folder (`report`, its pictures
in `figures`).

This package may import the shared top-level modules and every stage before it: `parity.cases`,
`parity.preprocessing`, `parity.models`, `parity.runners`, `parity.metrics`, `parity.runs` and
`parity.training`.
"""
