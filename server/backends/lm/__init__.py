"""InfoGain estimators: causal LMs (transformers, vLLM) and the embedded NLI proxy."""
