"""Detection: per-sequence scores of every detector, the verdicts and their reasons, and the
choice of thresholds and fused rule on the val split."""
