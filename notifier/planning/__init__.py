"""Planning: what to send when. Plans as data, the pure schedule, the outbox rows."""
