"""The real-traffic reader: the counters integration services write with the kit, read from Redis."""
