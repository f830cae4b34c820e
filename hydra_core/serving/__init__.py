"""Many tasks served from one process: the task registry and its HTTP API."""
