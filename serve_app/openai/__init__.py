"""The OpenAI Conversations + Responses view of Parley's domain objects (pure, no web framework)."""
