"""What the people running the fleet see: SLO metrics and request timing (and traces)."""
