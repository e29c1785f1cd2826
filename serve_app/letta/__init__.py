"""The Letta REST surface (/v1): request schemas, rendering, routes."""
