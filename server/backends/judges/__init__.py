"""Judges of claims against evidence: embedded (baseline, NLI), vLLM, cascade."""
