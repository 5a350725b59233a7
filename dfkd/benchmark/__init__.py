"""The benchmark: runner (stage order), run records, leaderboards, suites."""
