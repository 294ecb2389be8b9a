"""In-process, virtual-time cluster: simulated engine cores with the real scheduler and plugins in the loop."""

from llmd_kserve.cluster_sim.run import run_bench, sim_entry, simulate
from llmd_kserve.cluster_sim.sim import ClusterSim, SimOptions, SimRun

__all__ = ["ClusterSim", "SimOptions", "SimRun", "run_bench", "sim_entry", "simulate"]
