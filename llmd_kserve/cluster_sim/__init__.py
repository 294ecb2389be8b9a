"""In-process virtual-time cluster: the real scheduler and plugins in the loop with simulated engine cores."""
