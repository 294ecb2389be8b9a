"""KServe deployment: typed spec, manifest rendering, pod discovery, apply/wait."""
