"""Version knowledge, doctor findings and declarative patches for mamba-ssm and causal-conv1d.

`registry` is the patch engine (see its docstring for the API), `runtime_patches` the fixes for
installed packages (also baked into source trees), `build_patches` the compile-time fixes.
"""
