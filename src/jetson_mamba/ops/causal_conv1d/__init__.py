"""Causal depthwise conv1d backends: naive (reference), torch (portable), cuda (compiled), triton."""
