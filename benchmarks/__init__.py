"""Benchmarks: load shapes driven through the real SDKs against a real server and the fake LLM."""
