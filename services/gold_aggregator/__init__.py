"""gold_aggregator: event-time windows over silver, exactly once, to the gold topic and the lake."""
