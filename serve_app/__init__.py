"""HTTP only: the Ray Serve deployment, the Letta (/v1) and OpenAI (/openai/v1) routes, SSE, errors."""
