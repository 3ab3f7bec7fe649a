"""The faust-streaming processor: decode, authenticate, order, chain, check policy, checkpoint."""
