"""Selective scan (Mamba1) backends: naive (reference), torch (portable), cuda (compiled), triton."""
