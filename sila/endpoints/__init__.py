"""Model endpoints: node-local servers (vLLM) and the OpenAI-compatible client stages use."""
