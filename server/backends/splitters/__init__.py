"""Step splitters that run as backends (the LLM decomposer served by vLLM)."""
