"""From episode results to numbers: per-query records, summaries with CIs, and the one paired comparison."""
